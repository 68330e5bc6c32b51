"""The sandboxed executor: isolated, exact, fast. See executor.py and isolation.py."""

from azr.sandbox.pool import SandboxError, SandboxExecutor
from azr.sandbox.isolation import IsolationUnavailable

__all__ = ["IsolationUnavailable", "SandboxError", "SandboxExecutor"]
