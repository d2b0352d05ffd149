"""`python -m fabric`, building bundles with the hook templates in $DEPLOYTOOL_TEST_HOOKS (a test's own small
hooks: no Celery worker, and sleeps where a test must catch a rollout in the middle) instead of scripts/.
Everything else is the real `fab`: tests run it as a subprocess, `python tests/fab_with_hooks.py deploy ...`."""

from __future__ import annotations

import os
from pathlib import Path

from deploytool import render


def _fixture_templates(cls: type[render.Templates]) -> render.Templates:
    return cls(render.TOOL_ROOT / "appspec" / "appspec.yml.j2", Path(os.environ["DEPLOYTOOL_TEST_HOOKS"]))


render.Templates.default = classmethod(_fixture_templates)  # type: ignore[method-assign, assignment]

if __name__ == "__main__":
    from fabric.main import program

    program.run()
