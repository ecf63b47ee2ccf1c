"""Execution environments behind one Protocol: `namespace` (isolated), `process`, `fake`."""

from lamina.sandbox.api import Sandbox, SandboxBackend, SandboxError, SandboxSpec, Template
from lamina.sandbox.safe import SafeSandbox

__all__ = ["SafeSandbox", "Sandbox", "SandboxBackend", "SandboxError", "SandboxSpec", "Template"]
