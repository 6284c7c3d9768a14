"""Moved to tests/support/servers.py. What is left re-exports the name that
tests/faults/test_registry_faults.py still imports from here; import it from `support`."""

from support.servers import running

__all__ = ["running"]
