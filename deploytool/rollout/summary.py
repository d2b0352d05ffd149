"""A finished release for machines and CI: the JSON result file and the GitHub step summary.

Contract: `write_json(path, result)` replaces the file atomically (temp file in the same directory,
then rename), so a reader never sees half a result. `markdown(result)` is a table per group;
`append_step_summary(path, result)` appends it to $GITHUB_STEP_SUMMARY. `ResultWriters` is a
Reporter doing both when the release finishes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from deploytool.errors import UsageError
from deploytool.rollout.events import Event, ReleaseFinished
from deploytool.rollout.result import RolloutResult

ICON = {
    "succeeded": "✅",
    "already-deployed": "✅",
    "failed": "❌",
    "stopped": "⏹",
    "not-started": "⏸",
    "detached": "↗",
}


def check_json_out(path: Path) -> None:
    """Fail before deploying when the result could not be written afterwards: the directory must exist and
    take a file (tried, as write_json does: a temp file made and removed), the path must not be a directory."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise UsageError(
            f"--json-out {path}: directory {parent} does not exist; allowed: a file in an existing, writable directory"
        )
    if Path(path).is_dir():
        raise UsageError(f"--json-out {path}: is a directory; allowed: a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(
            f"--json-out {path}: cannot write in {parent} ({exc.strerror or exc}); allowed: a file in "
            "an existing, writable directory"
        ) from None


def write_json(path: Path, result: RolloutResult) -> None:
    target = Path(path)
    check_json_out(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(result.to_dict(), out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _what(result: RolloutResult) -> str:
    if result.mode == "restart":  # no version of its own
        return f"rolling restart on `{result.target}`"
    return f"{result.mode} `{result.version}` to `{result.target}`"


def markdown(result: RolloutResult) -> str:
    verdict = "detached" if result.detached else ("succeeded" if result.succeeded else "failed")
    lines = [
        f"### deploytool {_what(result)}: {verdict}",
        "",
        f"Release `{result.release_id}`, {result.elapsed_s:.0f} s.",
        "",
        "| wave | group | strategy | outcome | instances ok/failed/total | deployment | rollback | error |",
        "| ---: | --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for g in result.groups:
        rollback = f"{g.rollback_deployment_id} {g.rollback_status or ''}".strip() if g.rollback_deployment_id else ""
        counts = f"{g.succeeded}/{g.failed}/{g.total}" if g.total else ""
        lines.append(
            f"| {g.wave} | {_cell(g.group)} | {_cell(g.strategy)} | {ICON.get(g.outcome, '')} {g.outcome} | "
            f"{counts} | {g.deployment_id or ''} | {rollback} | {_cell(g.error)} |"
        )
    if result.record is not None and not result.record.written:
        last = result.record.errors[-1] if result.record.errors else "unknown error"
        lines += [
            "",
            f"⚠️ **Release record not written** ({', '.join(result.record.stale)} stale in S3): {_cell(last)}",
        ]
    for check in (result.gate or {}).get("checks", []):
        mark = "🛑 " if check["decision"] == "halt" else ""
        early = f" (halted early, {check['took_s']:.0f} s into the bake)" if check.get("early") else ""
        lines += ["", f"{mark}**Health gate after wave {check['after_wave']}: {check['decision']}**{early}", ""]
        lines += [f"- {_cell(line)}" for line in check["evidence"]]
    failures = [(g.group, f) for g in result.groups for f in g.instance_failures]
    if failures:
        lines += ["", "Failed instances:", ""]
        lines += [f"- {grp} `{f.instance_id}` in {f.lifecycle_event}: {_cell(f.message)}" for grp, f in failures]
    return "\n".join(lines) + "\n"


def append_step_summary(path: Path, result: RolloutResult) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(markdown(result) + "\n")


class ResultWriters:
    """Writes the JSON result and/or the step summary when the release finishes."""

    def __init__(
        self,
        *,
        json_out: Path | None = None,
        step_summary: Path | None = None,
        annotate: Callable[[RolloutResult], RolloutResult] | None = None,
    ) -> None:
        self.json_out = json_out
        self.step_summary = step_summary
        self.annotate = annotate  # adds what other reporters learnt by the end (the release record's state)

    @classmethod
    def from_env(
        cls,
        json_out: str | None,
        environ: dict[str, str] | None = None,
        *,
        annotate: Callable[[RolloutResult], RolloutResult] | None = None,
    ) -> ResultWriters:
        env = os.environ if environ is None else environ
        summary = env.get("GITHUB_STEP_SUMMARY")
        return cls(
            json_out=Path(json_out) if json_out else None,
            step_summary=Path(summary) if summary else None,
            annotate=annotate,
        )

    def publish(self, event: Event) -> None:
        if not isinstance(event, ReleaseFinished):
            return
        result = self.annotate(event.result) if self.annotate is not None else event.result
        if self.json_out is not None:
            write_json(self.json_out, result)
        if self.step_summary is not None:
            append_step_summary(self.step_summary, result)
