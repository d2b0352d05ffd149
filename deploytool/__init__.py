"""deploytool: ship code to fleets of Celery workers on EC2 Auto Scaling groups.

Stages (each a module with one job, plain data in and out; see ARCHITECTURE in the README):
config -> plan -> bundle -> publish -> rollout -> reconcile.
"""

__version__ = "0.1.0"
