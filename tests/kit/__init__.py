"""The test kit: namespaces, nodes, pods, plugin runners, environment checks (README.md)."""

from kit.environment import in_ci, require, variant

__all__ = ["in_ci", "require", "variant"]
