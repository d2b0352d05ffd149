"""deploytool's fab tasks: each wires stages together; the work is in deploytool/.

Run `fab --list` for the tasks and `fab <task> --help` for their options. Every task takes
--fleet (default deploy.toml) and --debug (show the traceback of an error).
"""

from __future__ import annotations

from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.report import fleet_table

# --- config --------------------------------------------------------------------------------------


@cli_task(help={"fleet": "fleet file (default deploy.toml)", "debug": "show tracebacks"})
def check(c, fleet=None, debug=False):
    """Validate the fleet file and print it as a table."""
    loaded = fleet_from(fleet)
    console = make_console()
    console.print(fleet_table(loaded))
    for warning in loaded.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"{loaded.path}: ok ({len(loaded.groups)} groups, targets: {', '.join(loaded.targets)})")
