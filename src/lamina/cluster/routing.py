"""Invoke routing across the nodes of a cluster (`InvokeRouter` on NATS request/reply).

Where an invocation runs: on this node if it has an idle warm environment of that version;
else on a live node whose heartbeat reports one; else on the node the version hashes to
(rendezvous hashing over the healthy live nodes), so that a version's environments gather on
one node and stay warm there, and only the versions of a node that leaves move elsewhere.

A forwarded invocation travels as one NATS request to `<prefix>.invoke.<node>` and comes
back as one reply, each a small binary header followed by the raw payload or body (no JSON
or base64 around up to 6 MB). The serving node runs it as its own (`serve`), never
forwarding it again: the receiving node already chose it.

Both messages must fit the NATS servers' `max_payload` (1 MB unless configured; Lambda's
6 MB payloads want `max_payload: 8MB`): a request that does not fit is run on the receiving
node instead, a result that does not fit is answered as a ServiceException naming the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from lamina import limits
from lamina.cluster.api import (
    ForwardedInvoke,
    ForwardedResult,
    NodeDirectory,
    NodeInfo,
    NodeUnavailable,
)
from lamina.cluster.hashing import owner

log = logging.getLogger(__name__)

#: what a forwarded invocation may take beyond the function's Timeout before the receiving
#: node gives up on it: a cold start's init phase, and slack for a loaded machine
FORWARD_MARGIN_S = limits.INIT_TIMEOUT_S + 5.0

#: the NATS `max_payload` a forwarded invocation of Lambda's largest payload or response
#: fits in (6 MB and room for the header)
NEEDED_MAX_PAYLOAD = limits.SYNC_PAYLOAD_MAX_BYTES + 64 * 1024

LocalIdle = Callable[[str, str], int]
RunForwarded = Callable[[ForwardedInvoke], Awaitable[ForwardedResult]]

# -- rendezvous hashing ---------------------------------------------------------------------


def version_key(function_name: str, version: str) -> str:
    """How a function version is named in hashing and in `NodeLoad.idle`."""
    return f"{function_name}:{version}"


# -- the wire -------------------------------------------------------------------------------

_FORMAT = 1
_NONE = 0xFFFFFFFF
_INVOKE_FIELDS = 9
_INVOKE_HEAD = struct.Struct(f"!B{_INVOKE_FIELDS}I")
_RESULT_HEAD = struct.Struct("!BHH")


def _text(value: str | None) -> tuple[int, bytes]:
    if value is None:
        return _NONE, b""
    data = value.encode()
    return len(data), data


def encode_invoke(invoke: ForwardedInvoke) -> bytes:
    """The request: format byte, the nine fields' lengths (`_NONE` for a missing one), the
    fields, then the payload as it is."""
    fields = [
        _text(invoke.function_name),
        _text(invoke.version),
        _text(invoke.qualifier),
        _text(invoke.invocation_type),
        _text(invoke.log_type),
        _text(invoke.client_context),
        _text(invoke.trace_header),
        _text(invoke.request_id),
        _text(invoke.tenant_id),
    ]
    head = _INVOKE_HEAD.pack(_FORMAT, *(length for length, _ in fields))
    return b"".join([head, *(data for _, data in fields), invoke.payload])


def decode_invoke(data: bytes) -> ForwardedInvoke:
    """Raises ValueError for anything `encode_invoke` did not make."""
    if len(data) < _INVOKE_HEAD.size or data[0] != _FORMAT:
        raise ValueError("not a forwarded invoke of this format")
    _, *lengths = _INVOKE_HEAD.unpack_from(data)
    at = _INVOKE_HEAD.size
    values: list[str | None] = []
    for length in lengths:
        if length == _NONE:
            values.append(None)
            continue
        end = at + length
        if end > len(data):
            raise ValueError("a forwarded invoke cut short")
        values.append(data[at:end].decode())
        at = end
    name, version, qualifier, invocation_type, *rest = values
    if name is None or version is None or invocation_type is None:
        raise ValueError("a forwarded invoke without its function, version or type")
    log_type, client_context, trace_header, request_id, tenant_id = rest
    return ForwardedInvoke(
        function_name=name,
        version=version,
        qualifier=qualifier,
        payload=data[at:],
        invocation_type=invocation_type,
        log_type=log_type,
        client_context=client_context,
        trace_header=trace_header,
        request_id=request_id,
        tenant_id=tenant_id,
    )


def encode_result(result: ForwardedResult) -> bytes:
    """The reply: format byte, status, header count, each header's name and value lengths,
    the names and values (latin-1, as HTTP has them), then the body as it is."""
    parts = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in result.headers]
    lengths = struct.pack(f"!{2 * len(parts)}I", *(len(p) for pair in parts for p in pair))
    head = _RESULT_HEAD.pack(_FORMAT, result.status, len(parts))
    return b"".join([head, lengths, *(p for pair in parts for p in pair), result.body])


def decode_result(data: bytes) -> ForwardedResult:
    """Raises ValueError for anything `encode_result` did not make."""
    if len(data) < _RESULT_HEAD.size or data[0] != _FORMAT:
        raise ValueError("not a forwarded result of this format")
    _, status, count = _RESULT_HEAD.unpack_from(data)
    lengths_at = _RESULT_HEAD.size
    at = lengths_at + 8 * count
    if at > len(data):
        raise ValueError("a forwarded result cut short")
    lengths = struct.unpack_from(f"!{2 * count}I", data, lengths_at)
    texts = []
    for length in lengths:
        end = at + length
        if end > len(data):
            raise ValueError("a forwarded result cut short")
        texts.append(data[at:end].decode("latin-1"))
        at = end
    headers = tuple(zip(texts[::2], texts[1::2], strict=True))
    return ForwardedResult(status=status, headers=headers, body=data[at:])


def service_exception(message: str) -> ForwardedResult:
    """Lambda's ServiceException (HTTP 500, `x-amzn-ErrorType`), as `api.errors` shapes it,
    for a forwarded invocation that failed on our side."""
    body = json.dumps({"Type": "Service", "Message": message}, separators=(",", ":")).encode()
    return ForwardedResult(
        status=500,
        headers=(
            ("content-length", str(len(body))),
            ("content-type", "application/json"),
            ("x-amzn-errortype", "ServiceException"),
            ("x-amzn-requestid", str(uuid.uuid4())),
        ),
        body=body,
    )


# -- the router -----------------------------------------------------------------------------


class NatsRouter:
    """`InvokeRouter` over a connected NATS client `nc`, with the live nodes from
    `directory`. `local_idle(name, version)` counts this node's idle environments of a
    version (the scheduler's `idle`); it is asked on every invoke, so it must be cheap."""

    def __init__(
        self,
        nc: Client,
        directory: NodeDirectory,
        local_idle: LocalIdle,
        *,
        prefix: str = "lamina",
        margin_s: float = FORWARD_MARGIN_S,
    ) -> None:
        self._nc = nc
        self._directory = directory
        self._local_idle = local_idle
        self._prefix = prefix
        self._margin_s = margin_s
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def subject(self, node: str) -> str:
        """Where `node` takes forwarded invocations."""
        return f"{self._prefix}.invoke.{node}"

    def choose(self, function_name: str, version: str) -> str | None:
        """Unhealthy nodes are never chosen; this node, unhealthy, owns nothing (but runs
        what it has idle environments for, and everything when no other node is healthy).
        Among several nodes with idle environments, the version's rendezvous order picks
        (the same one from every receiving node, so that warm environments stay together)."""
        if self._local_idle(function_name, version) > 0:
            return None
        me = self._directory.self_name
        nodes = [n for n in self._directory.live() if n.healthy]
        if not any(n.name != me for n in nodes):
            return None
        key = version_key(function_name, version)
        warm = [n.name for n in nodes if n.name != me and _idle(n, key)]
        chosen = owner(key, warm) or owner(key, (n.name for n in nodes))
        return None if chosen == me else chosen

    async def forward(
        self, node: str, invoke: ForwardedInvoke, *, timeout_s: float = limits.TIMEOUT_MAX_S
    ) -> ForwardedResult:
        """`timeout_s` is the function's Timeout: the node gets that and `margin_s` to
        answer. (A node that took the invocation and answers later than that has run it
        when the caller runs it here too: the margin covers a cold start's init so that
        only a node in trouble is that late.)"""
        data = encode_invoke(invoke)
        if len(data) > self._nc.max_payload:
            raise NodeUnavailable(
                f"a {len(data)}-byte invocation exceeds NATS's max_payload "
                f"({self._nc.max_payload} bytes)"
            )
        try:
            reply = await self._nc.request(
                self.subject(node), data, timeout=timeout_s + self._margin_s
            )
        except NoRespondersError:
            raise NodeUnavailable(f"node {node} takes no invocations (no responders)") from None
        except NatsTimeoutError:
            raise NodeUnavailable(
                f"node {node} did not answer within {timeout_s + self._margin_s:.0f} s"
            ) from None
        except NatsError as e:
            raise NodeUnavailable(f"cannot forward to node {node}: {e}") from None
        try:
            return decode_result(reply.data)
        except ValueError as e:
            # It ran there (or may have): running it here too would run it twice.
            log.error("node %s answered a forwarded invocation unreadably: %s", node, e)
            return service_exception(f"Node {node} answered the invocation unreadably.")

    async def serve(self, run: RunForwarded) -> None:
        """Take invocations forwarded to this node: each is run by `run` in a task of its own
        and answered with what it returns; an exception of `run` is answered as a
        ServiceException (and logged), the subscription goes on."""
        if self._subscription is not None:
            return
        if self._nc.max_payload < NEEDED_MAX_PAYLOAD:
            log.warning(
                "NATS takes messages of up to %d bytes: invocations with larger payloads run "
                "where they are received, larger responses of forwarded ones fail; set "
                "max_payload to at least %d on the NATS servers",
                self._nc.max_payload,
                NEEDED_MAX_PAYLOAD,
            )

        async def on_request(msg: Msg) -> None:
            task = asyncio.get_running_loop().create_task(self._answer(msg, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._subscription = await self._nc.subscribe(
            self.subject(self._directory.self_name), cb=on_request
        )
        await self._nc.flush()  # our server has the subscription when this returns

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop taking invocations; those running get `grace_s` to be answered, then are
        cancelled."""
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _answer(self, msg: Msg, run: RunForwarded) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody to answer
        try:
            invoke = decode_invoke(msg.data)
        except ValueError as e:
            log.error("an unreadable forwarded invocation on %s: %s", msg.subject, e)
            await self._respond(msg, service_exception("The invocation could not be read."))
            return
        try:
            result = await run(invoke)
        except Exception as e:
            request_id = str(uuid.uuid4())
            log.error("a forwarded invocation failed (RequestId: %s)", request_id, exc_info=e)
            result = service_exception(
                f"Lamina encountered an internal error. (RequestId: {request_id})"
            )
        await self._respond(msg, result)

    async def _respond(self, msg: Msg, result: ForwardedResult) -> None:
        data = encode_result(result)
        if len(data) > self._nc.max_payload:
            result = service_exception(
                f"The function's {len(result.body)}-byte response exceeds NATS's max_payload "
                f"({self._nc.max_payload} bytes) between nodes."
            )
            data = encode_result(result)
        try:
            await msg.respond(data)
        except NatsError as e:
            log.warning("could not answer a forwarded invocation: %s", e)


def _idle(node: NodeInfo, key: str) -> bool:
    return node.load.idle.get(key, 0) > 0
