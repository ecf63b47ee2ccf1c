"""The debugger relay (`lamina.scheduler.debugging`), without a server: a listener on the
host's loopback whose connections reach a port the sandbox's debugger listens on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from lamina.sandbox.api import connect_local
from lamina.scheduler.debugging import Debugger, DebugRelay, DebugSpec, free_port, open_relay


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


def test_relays_both_ways_and_counts_clients() -> None:
    async def test() -> None:
        inner = free_port()
        relay = DebugRelay(connect_local, inner)
        port = await relay.open()
        left: list[int] = []
        relay.on_detach = left.append
        # The client connects before the debugger listens: the relay waits for it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.3)
        assert relay.attached == 1
        server = await asyncio.start_server(_echo, "127.0.0.1", inner)
        try:
            writer.write(b"x" * 200_000)
            await writer.drain()
            got = await reader.readexactly(200_000)
            assert got == b"X" * 200_000
            writer.close()
            for _ in range(100):
                if left:
                    break
                await asyncio.sleep(0.02)
            assert left == [0] and relay.attached == 0
        finally:
            server.close()
            await relay.close()

    run(test)


def test_a_requested_port_and_the_runtime_variables() -> None:
    async def test() -> None:
        wanted = free_port()
        env = {"NODE_OPTIONS": "--max-old-space-size=100"}
        node = await open_relay(
            Debugger(DebugSpec(wait=True, port=wanted), "node"), connect_local, env
        )
        try:
            assert node.port == wanted
            assert env["NODE_OPTIONS"] == (
                f"--inspect-wait=127.0.0.1:{node.inner_port} --max-old-space-size=100"
            )
        finally:
            await node.close()
        env.clear()
        python = await open_relay(
            Debugger(DebugSpec(), "debugpy", "/var/lang/debugger"), connect_local, env
        )
        try:
            assert env == {
                "_LAMINA_DEBUG": "listen",
                "_LAMINA_DEBUG_PORT": str(python.inner_port),
                "_LAMINA_DEBUGPY": "/var/lang/debugger",
            }
        finally:
            await python.close()

    run(test)
