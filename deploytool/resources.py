"""Where deploytool's own files live: appspec/, scripts/ and athena/ (templates, hook sources, SQL).

The top-level appspec/, scripts/ and athena/ of the source tree are the only copy. A wheel carries them,
everything under each directory, as package data in deploytool/_data/ (pyproject's package-dir mapping), and
`resource_root()` finds them there with importlib.resources in every install that puts files on disk: a venv,
`pip install --user`, `pip install --target DIR`. A source checkout (PYTHONPATH=.) and the editable install
dev.py makes have no deploytool/_data: there the three directories sit beside the package. Nothing is guessed
from sys.prefix or the environment.

Contract: `resource_root()` returns the directory that holds appspec/, scripts/ and athena/; when neither place
has them all (a broken install), the packaged location, so the caller's "not found" error names where they
should have been.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DATA_DIRS = ("appspec", "scripts", "athena")
PACKAGED = "_data"  # deploytool/_data/<dir> in a wheel


def _complete(root: Path) -> bool:
    return all((root / name).is_dir() for name in DATA_DIRS)


def resource_root() -> Path:
    packaged = files("deploytool") / PACKAGED
    if isinstance(packaged, Path) and _complete(packaged):
        return packaged
    source = Path(__file__).resolve().parent.parent
    if _complete(source):
        return source
    return packaged if isinstance(packaged, Path) else source
