"""The `deploytool` command: fabric's own Program (`fab`) over deploytool's task tree, with no fabfile.

`deploytool <task> [options]` runs what `fab <task> [options]` runs in a repository whose fabfile.py is the
two-line import: the same tasks (deploytool.tasks.ns), options, help, configuration and exit codes, and the
same one-line, exit-2 answer to a command line invoke cannot parse (deploytool.cli), naming `deploytool`
instead of `fab`. pyproject's [project.scripts] points the console script at `program.run`.
"""

from __future__ import annotations

from fabric import Config, Executor
from fabric.main import Fab
from invoke.parser import Parser

from deploytool import __version__
from deploytool.cli import command_parser
from deploytool.tasks import ns

COMMAND = "deploytool"


class Program(Fab):  # type: ignore[misc]
    """fabric's Fab with deploytool's tasks bundled in (invoke then loads no fabfile, and has no -c/--collection)."""

    def _make_parser(self) -> Parser:
        return command_parser(super()._make_parser(), COMMAND)


program = Program(
    name=COMMAND,
    binary=COMMAND,
    binary_names=[COMMAND],
    version=__version__,
    namespace=ns,
    executor_class=Executor,
    config_class=Config,
)
