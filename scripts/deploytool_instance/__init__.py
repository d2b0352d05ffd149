"""deploytool's instance-side code: the lifecycle hooks and the worker launcher (ships in the bundle).

Runs on production instances under the CodeDeploy agent (or the sandbox's LifecycleRunner) with the
APP's Python, 3.9 or newer, and the app's Celery/kombu; deploytool is never installed there. So every
module here imports only the standard library, celery/kombu and this package: never deploytool,
pydantic, boto3/botocore, rich, jinja2, fabric or invoke. Checked by vermin (3.9), ruff (target py39,
banned imports, scripts/ruff.toml), mypy --strict, an import-linter `forbidden` contract and the fence
test (tests/test_instance_fence.py: every module imported in a fresh interpreter that refuses them).

In the bundle this package sits at <bundle>/deploytool/hooks/deploytool_instance/, beside the two thin
entry points the appspec and the systemd unit name (scripts/celery_hooks.py, scripts/celery_worker.py);
running one of them puts deploytool/hooks/ first on sys.path, which is how this package is found.

Modules, one concern each:
    base        exit codes, HookError/HookTerminated, Clock, Log
    layout      instance paths (Layout) and the small file operations on them
    settings    fleet.json narrowed to one group, the environment file, instance id and node name
    processes   finding the running worker (pidfile or systemd) and the signals drain sends it
    systemd     the group's unit: install it, ask for its main pid, stop it
    brokers/    the broker's settings and client; remote control (Redis, RabbitMQ); SQS (no remote control);
                sqs_visibility: the visibility heartbeat and the explicit release at shutdown
    imds        the instance metadata service (IMDSv2): instance id, spot/rebalance/Terminated notices
    interrupted what a cold shutdown cut off, as lines the sandbox runner turns into warnings
    drain       ApplicationStop
    start       ApplicationStart
    validate    ValidateService
    watcher     `celery_hooks.py watch`: the interruption watcher ApplicationStart starts beside the worker
    hooks       `celery_hooks.py drain|start|validate|watch`
    launcher    `celery_worker.py GROUP`: the worker process itself
"""
