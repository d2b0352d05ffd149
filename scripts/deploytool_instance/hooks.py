"""`celery_hooks.py drain|start|validate`: the three lifecycle hooks, one command each.

    celery_hooks.py drain       ApplicationStop: drain the running worker within drain_timeout
    celery_hooks.py start       ApplicationStart: start the group's worker on the new release
    celery_hooks.py validate    ValidateService: prove the new worker runs and takes work
    celery_hooks.py watch       the interruption watcher ApplicationStart starts beside the worker (watcher)

The settings come from the bundle this package shipped in and DEPLOYMENT_GROUP_NAME. A HookError
ends the hook with its one line and its code; an OSError (a path the hook cannot write, typically as
app.user in a directory root made) with one line naming the path, the user and the fix, exit 1; the
agent's SIGTERM (hook timeout) with 143. Exit status:
0 done, 1 failed, 2 bad input (also a wrong command line), 143 terminated.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from deploytool_instance.base import EXIT_BAD_INPUT, EXIT_TERMINATED, Clock, HookError, HookTerminated, Log
from deploytool_instance.drain import drain
from deploytool_instance.settings import Settings, bundle_root, file_error, load_settings
from deploytool_instance.start import start
from deploytool_instance.validate import validate
from deploytool_instance.watcher import watch

STARTED = time.monotonic()


def _raise_terminated(signum: int, frame: Any) -> None:
    raise HookTerminated()


COMMANDS: dict[str, Callable[[Settings, Clock, Log], int]] = {
    "drain": drain,
    "start": start,
    "validate": validate,
    "watch": watch,
}


USAGE = "usage: celery_hooks.py drain|start|validate|watch"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return EXIT_BAD_INPUT
    clock = Clock()
    log = Log(argv[0], clock, started=STARTED)
    signal.signal(signal.SIGTERM, _raise_terminated)  # the agent's timeout; drain answers it with SIGQUIT
    settings: Settings | None = None
    try:
        settings = load_settings(bundle_root(), os.environ)
        return COMMANDS[argv[0]](settings, clock, log)
    except HookError as exc:
        log.step("error", str(exc))
        return exc.code
    except OSError as exc:
        error = file_error(exc, settings)
        log.step("error", str(error))
        return error.code
    except HookTerminated:
        log.step("error", f"{argv[0]} was terminated by SIGTERM (hook timeout?)")
        return EXIT_TERMINATED
