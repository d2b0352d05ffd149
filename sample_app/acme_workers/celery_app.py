"""The Celery application. Broker and its options come from the instance's environment.

CELERY_BROKER_URL: redis://, amqp:// or sqs:// URL (the sandbox writes it per instance).
CELERY_BROKER_TRANSPORT_OPTIONS: optional JSON object merged into broker_transport_options
(for example the SQS region and endpoint of a local moto server).
CELERY_RESULT_BACKEND: optional; the sample tasks record their runs themselves (see ledger.py).
"""

from __future__ import annotations

import json
import os

from celery import Celery

app = Celery("acme_workers", include=["acme_workers.tasks"])
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND") or None,
    broker_transport_options=json.loads(os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}"),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="email",
    task_routes={
        "acme_workers.tasks.transcode_video": {"queue": "video"},
        "acme_workers.tasks.send_email": {"queue": "email"},
        "acme_workers.tasks.build_report": {"queue": "reports"},
    },
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
