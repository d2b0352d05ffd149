#!/usr/bin/env python3
"""Entry point of the lifecycle hooks: `celery_hooks.py drain|start|validate` (deploytool_instance.hooks).

The appspec's shell scripts exec this file with the app's Python; Python puts this file's directory
(<bundle>/deploytool/hooks) first on sys.path, which is where the deploytool_instance package sits.
"""

import sys

from deploytool_instance.hooks import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
