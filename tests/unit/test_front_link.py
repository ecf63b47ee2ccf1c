"""The link between the server and a front worker (`lamina.front.link`): frames arrive whole
and in order however the stream splits them, each descriptor with the frame that carried it,
and a frame that cannot be read closes the link rather than being guessed at."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Any

from lamina.front.link import Link, LinkClosed


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


async def _collect(count: int, frames: list[tuple[Any, int]], closed: asyncio.Event) -> None:
    while len(frames) < count and not closed.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def test_frames_and_descriptors_arrive_in_order() -> None:
    async def run() -> list[tuple[Any, bytes | None]]:
        a, b = _pair()
        got: list[tuple[Any, int]] = []
        closed = asyncio.Event()
        sender = Link(a, lambda f, fd: None, lambda: None)
        receiver = Link(b, lambda f, fd: got.append((f, fd)), closed.set)
        pipes = [os.pipe() for _ in range(3)]
        big = b"x" * 3_000_000  # larger than the socket's buffer: sent in many pieces
        sender.send(("plain", 1))
        sender.send(("with-fd", 2), pipes[0][0])
        sender.send(("big", big))
        sender.send(("with-fd", 3), pipes[1][0])
        sender.send(("with-fd", 4), pipes[2][0])
        await asyncio.wait_for(_collect(5, got, closed), 10)
        out: list[tuple[Any, bytes | None]] = []
        for (frame, fd), n in zip(got, range(5), strict=True):
            data = None
            if fd >= 0:
                # Each descriptor is the pipe its frame was sent with: write to the pipe's
                # other end and read here.
                os.write(pipes[[2, 3, 4].index(frame[1])][1], b"%d" % n)
                data = os.read(fd, 10)
                os.close(fd)
            out.append((frame[0] if frame[0] != "big" else ("big", len(frame[1])), data))
        sender.close()
        receiver.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
        return out

    assert asyncio.run(run()) == [
        ("plain", None),
        ("with-fd", b"1"),
        (("big", 3_000_000), None),
        ("with-fd", b"3"),
        ("with-fd", b"4"),
    ]


def test_a_frame_too_large_or_unreadable_closes_the_link() -> None:
    async def run(raw: bytes) -> bool:
        a, b = _pair()
        closed = asyncio.Event()
        got: list[Any] = []
        receiver = Link(b, lambda f, fd: got.append(f), closed.set)
        a.sendall(raw)
        await asyncio.wait_for(closed.wait(), 5)
        a.close()
        return receiver.closed and not got

    assert asyncio.run(run(struct.pack("!I", 100 * 1024 * 1024) + b"x"))
    assert asyncio.run(run(struct.pack("!I", 3) + b"\xff\xff\xff"))
    # A frame that says a descriptor came with it, and none did.
    assert asyncio.run(run(struct.pack("!I", (1 << 31) | 1) + b"N"))


def test_sending_on_a_closed_link_raises() -> None:
    async def run() -> None:
        a, b = _pair()
        link = Link(a, lambda f, fd: None, lambda: None)
        b.close()
        link.close()
        try:
            link.send(("x",))
        except LinkClosed:
            return
        raise AssertionError("sent on a closed link")

    asyncio.run(run())
