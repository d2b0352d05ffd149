"""Acme's Celery workers: the sample application every deploytool example deploys."""

RELEASE_NOTE = "v1: first release"

# The sample's failure switch: task name -> the share of its runs that fail (raise TaskFailed after they ran), while
# everything else, ValidateService's canary included, works. A release that sets it is a bad release the health
# gate should stop; e.g. FAILING = {"build_report": 0.2}. Which runs fail follows from the task id (reproducible).
FAILING: dict[str, float] = {}
