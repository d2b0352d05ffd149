"""deploytool's tasks for `fab` (`fab --list`); the same file works in any repository that deploys with deploytool."""
from deploytool.tasks import ns  # noqa: F401
