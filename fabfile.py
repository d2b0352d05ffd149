"""deploytool's tasks for `fab` (`fab --list`)."""

from deploytool.tasks import ns  # noqa: F401
