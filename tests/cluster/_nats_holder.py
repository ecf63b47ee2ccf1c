"""A node's NATS parts in a process of its own, for the tests to kill -9: joins the directory
as NAME, takes the lease KEY (if given), prints "ready" and then heartbeats and renews until
killed.

    python _nats_holder.py PREFIX NAME TTL_S HEARTBEAT_S URL[,URL...] [KEY]
"""

from __future__ import annotations

import asyncio
import sys

from lamina.cluster.api import NodeLoad
from lamina.cluster.leases import NatsLeases
from lamina.cluster.nats import NatsLink
from lamina.cluster.nodes import NatsNodeDirectory


async def main(argv: list[str]) -> None:
    prefix, name, ttl_s, heartbeat_s, urls = argv[:5]
    link = NatsLink(prefix)
    await link.connect(urls.split(","), name, timeout_s=10)
    directory = NatsNodeDirectory(
        link, name, f"http://{name}", float(ttl_s), float(heartbeat_s), NodeLoad
    )
    await directory.start()
    if len(argv) > 5:
        leases = NatsLeases(link, name, float(ttl_s))
        await leases.start()
        if not await leases.acquire(argv[5]):
            raise SystemExit(f"lease {argv[5]} is held by another")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
