"""The channel a streamed response flows through, from an environment's Runtime API to the
caller (InvokeWithResponseStream, a RESPONSE_STREAM function URL).

A leaf: the Runtime API feeds it (`start`, `feed`), the API layer drains it (`next`), and
whoever ran the invocation ends it (`end`) once the invocation's outcome is known. The
runtime's chunks go through in the order written, as soon as they arrive; several that
arrive before the caller takes them are handed over together (fewer, larger writes when the
caller is slower than the function).

Backpressure: past `HIGH_WATER_BYTES` waiting, the feeder is asked to stop reading
(`on_pressure(True)`) and told to go on once the caller has taken them. A caller that is
gone (`close`) takes nothing more: what the function still writes is dropped, and the
invocation runs to its end as on Lambda (a disconnect does not stop the function).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

#: bytes waiting for the caller beyond which the runtime's connection stops being read
HIGH_WATER_BYTES = 1024 * 1024


class ResponseStream:
    """One invocation's streamed response. Single producer, single consumer, one loop."""

    def __init__(self) -> None:
        #: the runtime answered in streaming mode (set by `start`)
        self.streaming = False
        #: the Content-Type the runtime gave its streamed response
        self.content_type = "application/octet-stream"
        #: bytes the runtime has written, all told
        self.written = 0
        self._chunks: deque[bytes] = deque()
        self._waiting = 0
        self._ended = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        #: called with True to stop reading the runtime, False to read on
        self.on_pressure: Callable[[bool], None] | None = None
        self._pressed = False

    # -- the producer (the Runtime API) ------------------------------------------------

    def start(self, content_type: str | None) -> None:
        """The runtime began a streamed response."""
        self.streaming = True
        if content_type:
            self.content_type = content_type
        self._wake()

    def feed(self, chunk: bytes) -> None:
        """The runtime wrote `chunk`."""
        self.written += len(chunk)
        if self._ended or self._closed or not chunk:
            return
        self._chunks.append(chunk)
        self._waiting += len(chunk)
        if self._waiting > HIGH_WATER_BYTES and not self._pressed and self.on_pressure:
            self._pressed = True
            self.on_pressure(True)
        self._wake()

    # -- the owner -----------------------------------------------------------------------

    def end(self) -> None:
        """The invocation is over: nothing more will come (what is waiting still goes)."""
        self._ended = True
        self._release()
        self._wake()

    def close(self) -> None:
        """The caller is gone: drop what waits and whatever comes."""
        self._closed = True
        self._chunks.clear()
        self._waiting = 0
        self._release()
        self._wake()

    @property
    def ended(self) -> bool:
        return self._ended

    # -- the consumer (the API layer) ----------------------------------------------------

    async def started(self) -> None:
        """Return once the runtime began streaming, or the invocation is over."""
        while not (self.streaming or self._ended or self._closed):
            await self._wait()

    async def next(self) -> bytes | None:
        """What the runtime wrote since the last call (waiting for it), or None once the
        invocation is over and everything was taken."""
        while True:
            if self._chunks:
                data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._waiting = 0
                self._release()
                return data
            if self._ended or self._closed:
                return None
            await self._wait()

    async def paced(self, uncapped_bytes: int, bytes_per_s: float) -> AsyncIterator[bytes]:
        """`next()` until the end, the bytes past the first `uncapped_bytes` held to at most
        `bytes_per_s` (Lambda's bandwidth cap on a streamed response)."""
        sent = 0
        capped_since = 0.0
        while (data := await self.next()) is not None:
            yield data
            sent += len(data)
            if sent <= uncapped_bytes:
                continue
            now = time.monotonic()
            if not capped_since:
                capped_since = now
            due = capped_since + (sent - uncapped_bytes) / bytes_per_s
            if due > now:
                await asyncio.sleep(due - now)

    # -- internals -----------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self) -> None:
        if self._pressed:
            self._pressed = False
            if self.on_pressure is not None:
                self.on_pressure(False)
