"""`python -m deploytool <task> ...`: the `deploytool` command (deploytool.main), e.g. where no script is installed."""

from deploytool.main import program

program.run()
