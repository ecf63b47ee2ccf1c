"""Code packages and layer contents shared by every node (`BlobStore`), in the JetStream object
store `<prefix>_code`, each named by its SHA-256 (hex).

Blobs are up to 50 MB (zipped): they are streamed from and to files in chunks (the object
store's own), never held whole in memory. A fetched blob is written to a temporary file next
to `dest`, checked against its name, and only then renamed into place: a reader never sees a
partial or corrupted package at `dest`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import IO

import nats.js.errors
from nats.js.object_store import ObjectStore

from lamina.cluster.nats import NatsLink

log = logging.getLogger(__name__)

#: seconds without a chunk after which a blob's download is given up and tried again
STALL_S = 5.0
#: downloads of one blob tried before a cold start fails for want of its code
FETCH_TRIES = 3


class CorruptBlob(Exception):
    """A stored blob's content does not match its digest (it is refused, not written)."""


class _HashingWriter:
    """A file that hashes what is written to it (the object store writes chunk by chunk)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.written += len(data)
        return self._file.write(data)

    def restart(self) -> None:
        """Empty the file and the hash, for a new try."""
        self._file.seek(0)
        self._file.truncate()
        self.hash = hashlib.sha256()
        self.written = 0


async def _get_watched(obs: ObjectStore, name: str, writer: _HashingWriter) -> None:
    """`obs.get(name)` into `writer`, given up (TimeoutError) when no chunk has come for
    `STALL_S`: nats-py waits for an object's chunks without a timeout, and a consumer lost
    with its server would hang every cold start of that code on this node."""
    task = asyncio.ensure_future(obs.get(name, writeinto=writer))  # type: ignore[arg-type]
    try:
        seen = -1
        while True:
            done, _ = await asyncio.wait({task}, timeout=STALL_S)
            if done:
                task.result()
                return
            if writer.written == seen:
                raise TimeoutError(f"no part of blob {name} came from NATS for {STALL_S:.0f} s")
            seen = writer.written
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _digest_hex(nats_digest: str | None) -> str | None:
    """The hex SHA-256 of the object store's "SHA-256=<base64url>" digest."""
    if not nats_digest or "=" not in nats_digest:
        return None
    encoded = nats_digest.split("=", 1)[1]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    except ValueError:
        return None


def _temp_file_by(dest: Path) -> IO[bytes]:
    """A new temporary file in `dest`'s directory (created if missing), open for writing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile("wb", dir=dest.parent, prefix=f".{dest.name}.", delete=False)


class NatsBlobStore:
    """`BlobStore` on the object store `<prefix>_code`."""

    def __init__(self, link: NatsLink) -> None:
        self._link = link
        self._store: ObjectStore | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open (or create) the object store now, so that a node that cannot fails to join
        (`ClusterConfigError`) rather than at its first package."""
        await self._obs()

    async def _obs(self) -> ObjectStore:
        async with self._lock:
            if self._store is None:
                self._store = await self._link.object_store("code")
            return self._store

    async def exists(self, sha256: str) -> bool:
        obs = await self._obs()
        try:
            await obs.get_info(sha256)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def put(self, sha256: str, source: Path) -> None:
        if await self.exists(sha256):
            return
        obs = await self._obs()
        f = await asyncio.to_thread(open, source, "rb")
        try:
            info = await obs.put(sha256, f)
        finally:
            f.close()
        if _digest_hex(info.digest) != sha256:
            await self.delete(sha256)
            raise CorruptBlob(f"{source} does not have the SHA-256 {sha256}")

    async def fetch(self, sha256: str, dest: Path) -> bool:
        obs = await self._obs()
        try:
            await obs.get_info(sha256)
        except nats.js.errors.NotFoundError:
            return False
        f = await asyncio.to_thread(_temp_file_by, dest)
        tmp = Path(f.name)
        try:
            with f:
                writer = _HashingWriter(f)
                try:
                    await self._get(obs, sha256, writer)
                except nats.js.errors.DigestMismatchError:
                    raise CorruptBlob(f"blob {sha256} is corrupted in NATS") from None
                except nats.js.errors.NotFoundError:
                    return False
            if writer.hash.hexdigest() != sha256:
                raise CorruptBlob(
                    f"blob {sha256} has the content of {writer.hash.hexdigest()}: refused"
                )
            await asyncio.to_thread(tmp.replace, dest)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        return True

    @staticmethod
    async def _get(obs: ObjectStore, sha256: str, writer: _HashingWriter) -> None:
        """The object into `writer`, tried again (from the start) when a try stalls."""
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                await _get_watched(obs, sha256, writer)
                return
            except TimeoutError as e:
                if attempt == FETCH_TRIES:
                    raise
                log.warning("%s: trying again", e)
                writer.restart()

    async def delete(self, sha256: str) -> None:
        obs = await self._obs()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await obs.delete(sha256)
