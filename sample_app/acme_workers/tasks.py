"""Three queue families: video (long), email (short), reports (medium)."""

from __future__ import annotations

import hashlib
import time

from acme_workers import FAILING, RELEASE_NOTE
from acme_workers.celery_app import app
from acme_workers.ledger import record


class TaskFailed(Exception):
    """A run the release's failure switch (acme_workers.FAILING) makes fail."""


def fails(task_id: str, name: str) -> bool:
    share = float(FAILING.get(name, 0.0))
    return share > 0 and int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % 10000 < share * 10000


def _work(task_id: str, name: str, seconds: float) -> dict[str, object]:
    time.sleep(max(0.0, float(seconds)))
    record(task_id, name, RELEASE_NOTE)  # it ran (and is not lost), whether it then fails or not
    if fails(task_id, name):
        raise TaskFailed(f"{name} failed on {RELEASE_NOTE!r} (acme_workers.FAILING)")
    return {"task": name, "slept": seconds, "release": RELEASE_NOTE}


@app.task(bind=True, name="acme_workers.tasks.transcode_video")
def transcode_video(self, video_id: int, seconds: float = 2.0):  # type: ignore[no-untyped-def]
    return _work(self.request.id, "transcode_video", seconds)


@app.task(bind=True, name="acme_workers.tasks.send_email")
def send_email(self, to: str, seconds: float = 0.2):  # type: ignore[no-untyped-def]
    return _work(self.request.id, "send_email", seconds)


@app.task(bind=True, name="acme_workers.tasks.build_report")
def build_report(self, report_id: int, seconds: float = 1.0):  # type: ignore[no-untyped-def]
    return _work(self.request.id, "build_report", seconds)


@app.task(bind=True, name="acme_workers.tasks.canary")
def canary(self, token: str):  # type: ignore[no-untyped-def]
    """Sent by ValidateService through a per-instance queue: proves the worker takes work."""
    return {"token": token, "release": RELEASE_NOTE}
