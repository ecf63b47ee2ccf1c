"""Things that turn outside happenings into invocations (asynchronous invokes first)."""

from lamina.events.async_queue import AsyncQueue

__all__ = ["AsyncQueue"]
