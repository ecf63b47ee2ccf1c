"""The Lambda Extensions API (`/2020-01-01/extension/...`) of one execution environment.

Extensions register (`POST /register`), then long-poll `GET /event/next` for lifecycle
events: INVOKE for each invocation, SHUTDOWN when the environment ends. Lambda's rules:

- External extensions are the executables in `/opt/extensions/`; each registers under its
  file name and may subscribe to INVOKE and SHUTDOWN. Any other name registers an internal
  extension (a thread of the runtime process), which may subscribe to INVOKE only.
- The init phase ends when every external extension has registered and every registered
  extension, like the runtime, waits in `/event/next`; registration closes then.
- An invocation ends when the runtime has answered *and* every extension subscribed to
  INVOKE is back in `/event/next` (`busy` is empty).

Errors are Lambda's (403 with an `Extension.*` type) so that extension libraries see what
they see on AWS. This module keeps the state; `server.py` does the HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from lamina import untrusted_json

#: how many extensions one function may have (Lambda's limit)
MAX_EXTENSIONS = 10
#: the Shutdown phase's time budget, as on Lambda: 2 s with external extensions, 0.5 s with
#: internal ones only (none without extensions: the environment is killed at once)
SHUTDOWN_EXTERNAL_S = 2.0
SHUTDOWN_INTERNAL_S = 0.5
INVOKE = "INVOKE"
SHUTDOWN = "SHUTDOWN"
_EXTERNAL_EVENTS = frozenset({INVOKE, SHUTDOWN})
_INTERNAL_EVENTS = frozenset({INVOKE})


class Parkable(Protocol):
    """A connection an extension's `/event/next` can wait on."""

    alive: bool
    parked: bool

    def write(self, data: bytes) -> None: ...

    def unpark(self) -> None: ...


class ExtensionError(Exception):
    """A refused Extensions API call: HTTP status, Lambda's error type, message."""

    def __init__(self, status: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(eq=False)
class Extension:
    id: str
    name: str
    events: frozenset[str]
    external: bool
    #: waiting in (or due to call) /event/next with nothing to do
    waiting: bool = False
    queue: deque[bytes] = field(default_factory=deque)
    poller: Parkable | None = None
    #: got SHUTDOWN: its next /event/next (or its exit) ends its shutdown
    shutting_down: bool = False
    done: bool = False


def http_json(status: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Extensions:
    """The registered extensions of one environment and the events they are due.

    `on_change()` runs (on the event loop) whenever an extension becomes idle, so the owner
    can re-check `init_complete()` and `busy`.
    """

    def __init__(
        self,
        function_info: dict[str, str],
        on_change: Callable[[], None],
        on_registered: Callable[[Extension], None] | None = None,
        on_error: Callable[[str, Extension, str, bytes], None] | None = None,
    ) -> None:
        self._info = function_info
        self._on_change = on_change
        self._on_registered = on_registered
        self._on_error = on_error
        #: the external extensions the function's layers hold (file names)
        self.expected: frozenset[str] = frozenset()
        self.by_id: dict[str, Extension] = {}
        self.registration_open = True
        #: extensions still working on the current invocation
        self.busy: set[Extension] = set()
        #: True once some registered extension takes INVOKE (checked on every invoke)
        self.invoke_subscribers = False

    # -- state ---------------------------------------------------------------------

    def init_complete(self) -> bool:
        names = {e.name for e in self.by_id.values() if e.external}
        if not self.expected <= names:
            return False
        return all(e.waiting for e in self.by_id.values())

    def shutdown_subscribers(self) -> list[Extension]:
        return [e for e in self.by_id.values() if SHUTDOWN in e.events]

    @property
    def any_external(self) -> bool:
        return any(e.external for e in self.by_id.values())

    # -- the API -------------------------------------------------------------------

    def register(self, name: str | None, body: bytes, features: str | None) -> bytes:
        if not name:
            raise ExtensionError("403 Forbidden", "Extension.InvalidExtensionName", "Empty name")
        try:
            request = untrusted_json.loads(body or b"{}")
        except ValueError as e:
            raise ExtensionError("403 Forbidden", "InvalidRequestFormat", str(e)) from e
        events = request.get("events", []) if isinstance(request, dict) else None
        if not isinstance(events, list) or not all(isinstance(x, str) for x in events):
            raise ExtensionError(
                "403 Forbidden", "InvalidRequestFormat", "events must be a list of strings"
            )
        external = name in self.expected
        allowed = _EXTERNAL_EVENTS if external else _INTERNAL_EVENTS
        for event in events:
            if event not in allowed:
                kind = "external" if external else "internal"
                raise ExtensionError(
                    "403 Forbidden",
                    "Extension.InvalidEventType",
                    f"{event}: {kind} extensions cannot register for {event}",
                )
        if not self.registration_open:
            raise ExtensionError(
                "403 Forbidden", "Extension.RegistrationClosed", "Extension registration closed"
            )
        if any(e.name == name for e in self.by_id.values()):
            raise ExtensionError(
                "403 Forbidden",
                "Extension.InvalidExtensionState",
                f"Extension with this name already registered: {name}",
            )
        if len(self.by_id) >= MAX_EXTENSIONS:
            raise ExtensionError(
                "403 Forbidden",
                "Extension.TooManyExtensions",
                f"Extension limit ({MAX_EXTENSIONS}) reached",
            )
        ext = Extension(str(uuid.uuid4()), name, frozenset(events), external)
        self.by_id[ext.id] = ext
        if INVOKE in ext.events:
            self.invoke_subscribers = True
        if self._on_registered is not None:
            self._on_registered(ext)
        answer: dict[str, str] = {
            "functionName": self._info["functionName"],
            "functionVersion": self._info["functionVersion"],
            "handler": self._info["handler"],
        }
        if features and "accountId" in [f.strip() for f in features.split(",")]:
            answer["accountId"] = self._info["accountId"]
        return http_json(
            "200 OK",
            json.dumps(answer).encode(),
            [("Lambda-Extension-Identifier", ext.id)],
        )

    def find(self, identifier: str | None) -> Extension:
        """The registered extension an `Lambda-Extension-Identifier` names."""
        if not identifier:
            raise ExtensionError(
                "403 Forbidden",
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header",
            )
        try:
            uuid.UUID(identifier)
        except ValueError as e:
            raise ExtensionError(
                "403 Forbidden",
                "Extension.InvalidExtensionIdentifier",
                f"Invalid Lambda-Extension-Identifier: {identifier}",
            ) from e
        ext = self.by_id.get(identifier)
        if ext is None:
            raise ExtensionError(
                "403 Forbidden",
                "Extension.UnknownExtensionIdentifier",
                f"Unknown extension {identifier}",
            )
        return ext

    def next(self, conn: Parkable, identifier: str | None) -> None:
        """An extension's `/event/next`: answers with its next event, or parks `conn`
        until there is one."""
        ext = self.find(identifier)
        changed = False
        if ext.shutting_down and not ext.done:
            ext.done = True
            changed = True
        if not ext.waiting:
            ext.waiting = True
            self.busy.discard(ext)
            changed = True
        if ext.queue:
            ext.waiting = False
            conn.write(ext.queue.popleft())
        else:
            # Parked before anyone hears of it: `on_change` may answer it at once.
            ext.poller = conn
            conn.parked = True
        if changed:
            self._on_change()

    def error(
        self, kind: str, identifier: str | None, error_type: str | None, body: bytes
    ) -> bytes:
        """`/init/error` or `/exit/error`: reported, then the extension should exit."""
        ext = self.find(identifier)
        if not error_type:
            raise ExtensionError(
                "403 Forbidden",
                "Extension.MissingHeader",
                "Missing Lambda-Extension-Function-Error-Type header",
            )
        if self._on_error is not None:
            self._on_error(kind, ext, error_type, body)
        return http_json("202 Accepted", b'{"status":"OK"}')

    # -- events --------------------------------------------------------------------

    def dispatch(self, event: str, body: bytes) -> list[Extension]:
        """Queue `body` for every extension subscribed to `event` (delivered now to those
        waiting); returns them."""
        targets = [e for e in self.by_id.values() if event in e.events and not e.done]
        for ext in targets:
            if event == INVOKE:
                self.busy.add(ext)
            else:
                ext.shutting_down = True
            poller, ext.poller = ext.poller, None
            if poller is not None and poller.alive:
                ext.waiting = False
                poller.write(body)
                poller.unpark()
            else:
                ext.queue.append(body)
                if poller is None:
                    ext.waiting = False
        return targets

    def external_gone(self) -> None:
        """Every external extension process has exited: none of them holds an invocation
        or gets events any more."""
        for ext in self.by_id.values():
            if ext.external:
                ext.done = True
                ext.poller = None
                self.busy.discard(ext)
        self.invoke_subscribers = any(
            INVOKE in e.events and not e.done for e in self.by_id.values()
        )
        self._on_change()

    def forget(self, conn: Parkable) -> None:
        """A connection closed: an extension parked on it is no longer listening."""
        for ext in self.by_id.values():
            if ext.poller is conn:
                ext.poller = None
                if ext.shutting_down and not ext.done:
                    ext.done = True  # it exited while shutting down
                    self._on_change()


def invoke_event(request_id: str, invoked_arn: str, deadline_ms: int, trace_id: str) -> bytes:
    body = json.dumps(
        {
            "eventType": INVOKE,
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": invoked_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id},
        }
    ).encode()
    return http_json("200 OK", body, [("Lambda-Extension-Event-Identifier", str(uuid.uuid4()))])


def shutdown_event(reason: str, deadline_ms: int) -> bytes:
    body = json.dumps(
        {"eventType": SHUTDOWN, "shutdownReason": reason, "deadlineMs": deadline_ms}
    ).encode()
    return http_json("200 OK", body, [("Lambda-Extension-Event-Identifier", str(uuid.uuid4()))])
