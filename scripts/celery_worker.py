#!/usr/bin/env python3
"""Entry point of the worker: `celery_worker.py GROUP` (deploytool_instance.launcher).

`start` and the systemd unit run this file with the app's Python; the hooks recognise the worker by
this file's path in its command line. Python puts this file's directory (<bundle>/deploytool/hooks)
first on sys.path, which is where the deploytool_instance package sits.
"""

import sys

from deploytool_instance.launcher import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
