"""The Lambda Runtime API served to each execution environment."""

from lamina.runtime_api.server import Invocation, RuntimeApiServer, RuntimeOutcome

__all__ = ["Invocation", "RuntimeApiServer", "RuntimeOutcome"]
