"""Execution environments behind one Protocol: `process`, `fake` (and `namespace` to come)."""

from lamina.sandbox.api import Sandbox, SandboxBackend, SandboxError, SandboxSpec
from lamina.sandbox.safe import SafeSandbox

__all__ = ["SafeSandbox", "Sandbox", "SandboxBackend", "SandboxError", "SandboxSpec"]
