"""A small sandbox run for the Ctrl-C test: deploy a fixture app whose ApplicationStart leaves a
"worker" running (one that ignores SIGTERM, so teardown must escalate to SIGQUIT), then start a
second deployment whose BeforeInstall hangs, print READY and wait to be interrupted.

    python -m tests.sandbox_driver <work dir>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deploytool.rollout.backend import DeployRequest
from deploytool.sandbox.runner import Timing
from deploytool.sandbox.session import SandboxSession
from tests.builders import make_fleet, sandbox_target
from tests.sandbox_helpers import FIXTURE_APP, sh, upload, write_bundle

WORKER = (
    'nohup "$DEPLOYTOOL_PYTHON" -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
    'time.sleep(600)" >/dev/null 2>&1 </dev/null &\n'
    'mkdir -p "$DEPLOYTOOL_INSTANCE_ROOT/opt/fixture/run"\n'
    'echo $! > "$DEPLOYTOOL_INSTANCE_ROOT/opt/fixture/run/worker.pid"'
)


def main(work: Path) -> int:
    fleet = make_fleet(
        [{"name": "web", "strategy": "AllAtOnce"}], root=work, app=FIXTURE_APP, targets=sandbox_target({"web": 2})
    )
    bundle_v1 = write_bundle(
        work / "v1.tgz",
        {
            "hooks/start.sh": sh(WORKER),
            "appspec.yml": "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hooks/start.sh\n",
        },
    )
    bundle_v2 = write_bundle(
        work / "v2.tgz",
        {
            "hooks/hang.sh": sh("sleep 600"),
            "appspec.yml": "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: hooks/hang.sh\n",
        },
    )
    with SandboxSession(fleet, timing=Timing(kill_grace_s=2), worker_stop_grace_s=2, log=print) as sandbox:
        group = fleet.group("web")
        v1 = upload(sandbox.s3, bundle_v1, "v1")
        done = sandbox.backend.wait(sandbox.backend.start(DeployRequest(group, v1, release_id="r1")), 60)
        assert done.all_succeeded, done.error
        v2 = upload(sandbox.s3, bundle_v2, "v2")
        did = sandbox.backend.start(DeployRequest(group, v2, release_id="r2"))
        while sandbox.backend.poll([did])[did].current_event != "BeforeInstall":
            time.sleep(0.05)
        time.sleep(0.3)
        print("READY", flush=True)
        time.sleep(600)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1])))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
