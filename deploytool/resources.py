"""Where deploytool's own files live: appspec/, scripts/ and athena/.

In a source checkout (and the editable install `dev.py` makes) they sit beside the package; a wheel
installs them under `<prefix>/share/deploytool/` (pyproject's data-files).
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def resource_root() -> Path:
    if (SOURCE_ROOT / "appspec").is_dir():
        return SOURCE_ROOT
    shared = Path(sys.prefix) / "share" / "deploytool"
    return shared if shared.is_dir() else SOURCE_ROOT
