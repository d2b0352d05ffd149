"""Acme's Celery workers: the sample application every deploytool example deploys."""

RELEASE_NOTE = "v1: first release"
