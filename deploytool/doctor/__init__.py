"""`fab doctor`: a read-only preflight of a codedeploy target's AWS set-up.

Modules: facts.py (what was read, plain data), gather.py (reads it through the deploytool.aws gateways;
the one write is the S3 probe object, deleted at once), checks.py (pure: facts -> one Check per line),
command.py (runs both, prints lines or JSON, gives the exit code).
"""
