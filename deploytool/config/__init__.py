"""Stage 1, config: read and validate the fleet file (deploy.toml) into a frozen Fleet.

Contract: `load_fleet(path)` reads one TOML file and returns a `Fleet`, or raises `ConfigError`
whose message names the file, the key path (``groups[3].strategy``), the value and what is allowed.
No I/O beyond reading that file and looking at the paths it names (`check_paths`: the app source,
the local targets' roots); `parse_fleet` alone touches no disk. `Fleet.warnings` carries lint
findings that are not errors.

The package: models.py (the tables' models, Strategy, Fleet), messages.py (key paths and pydantic's
errors as one line), checks.py (cross-field rules), paths.py (the paths against the disk), load.py
(the file, table by table). This module re-exports what the rest of deploytool imports.
"""

from deploytool.config.load import load_fleet, parse_fleet
from deploytool.config.models import App, CodeDeployTarget, Fleet, Group, LocalTarget, Strategy

__all__ = ["App", "CodeDeployTarget", "Fleet", "Group", "LocalTarget", "Strategy", "load_fleet", "parse_fleet"]
