"""Code every node can run: packages and layer contents go to the cluster's blob store when
they are stored (before any row refers to them), and a node that starts an environment of
code it has not got fetches and unpacks it first, then merges the function's layers.

Blobs are never deleted by a node: another node may be storing the same digest for a new
function at that moment, and a lost blob would be a function no node can start. The object
store's clean-up is an operator's task (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from lamina.cluster.api import BlobStore
from lamina.control.layers import LayerMerges
from lamina.models import FunctionConfig
from lamina.store import CodeStore

log = logging.getLogger(__name__)


class CodeUnavailable(Exception):
    """The code of a function is neither on this node nor in the cluster's blob store."""


class SharedCode:
    """This node's code store, shared through `blobs`."""

    def __init__(
        self,
        blobs: BlobStore,
        store: CodeStore,
        merges: Callable[[], LayerMerges | None],
    ) -> None:
        self._blobs = blobs
        self._store = store
        self._merges = merges
        self._fetching: dict[str, asyncio.Future[None]] = {}

    async def share(self, sha256: str) -> None:
        """Put a package this node stored into the blob store (a no-op if there already)."""
        await self._blobs.put(sha256, self._store.zip_path(sha256))

    async def ensure(self, config: FunctionConfig) -> None:
        """Make `config`'s code and merged layers present on this node. Raises
        `CodeUnavailable` naming what is missing."""
        for sha in [config.code_sha256, *(layer.code_sha256 for layer in config.layers)]:
            if sha and not self._store.has(sha):
                await self._fetch(sha)
        merges = self._merges()
        if config.layers and merges is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, merges.build, config.layers)

    async def _fetch(self, sha256: str) -> None:
        """One fetch per digest at a time: concurrent cold starts wait for the same one."""
        running = self._fetching.get(sha256)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetching[sha256] = future
        try:
            await self._fetch_once(sha256)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        else:
            future.set_result(None)
        finally:
            del self._fetching[sha256]

    async def _fetch_once(self, sha256: str) -> None:
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryDirectory(prefix="lamina-fetch-") as tmp:
            dest = Path(tmp) / f"{sha256}.zip"
            if not await self._blobs.fetch(sha256, dest):
                raise CodeUnavailable(
                    f"the code {sha256} is not in the cluster's blob store (the node that "
                    "stored it may have failed before sharing it)"
                )
            data = await loop.run_in_executor(None, dest.read_bytes)
        stored = await loop.run_in_executor(None, self._store.put, data)
        log.info("code %s fetched from the cluster (%d bytes)", stored.sha256, stored.size)
