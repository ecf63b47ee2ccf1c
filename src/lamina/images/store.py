"""`ImageStore`: the node's cache of container images, content-addressed on disk.

    <root>/blobs/sha256/<hex>          layer blobs, verified, shared between images
    <root>/roots/<hex>/rootfs          an image's unpacked root filesystem (hex of its manifest)
    <root>/roots/<hex>/config.json     its ImageConfig, so `unpacked` answers after a restart
    <root>/tmp/                        downloads and unpacking in progress (emptied at start)

Nothing is half-written where it is read: a blob is renamed into `blobs/` only after its
digest matched, an image's directory into `roots/` only once every layer is applied (and every
layer's digest matched), and a failure removes what it had staged. A blob present in `blobs/`
is never fetched again.

`ensure` pulls one image digest at a time (an asyncio lock per digest: concurrent callers
share one pull), fetches an image's layers a few at a time, and each blob once (a lock per
blob: images sharing a layer fetch it once). Layers are unpacked while they download: one
thread of the pull's own applies them in order, each read from its staging file as the
download writes it (`_LayerFeed`), so layer 1 is being applied while it and the next ones
arrive; a layer already in `blobs/` is read from there. A layer's read ends only once its
download is verified and renamed into `blobs/`; a download that fails (its digest, say)
makes the reading fail too, and the whole staging root is removed. Each pull is logged on the
`lamina.images` logger (a line as each layer starts and finishes, one at the end) and kept
for `progress()`: "pulling" while layers download, "unpacking" once all are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lamina.images import (
    ImageConfig,
    ImageError,
    PullProgress,
    ResolvedImage,
    UnpackedImage,
)
from lamina.images.reference import Registries, parse_image_uri
from lamina.images.registry import RegistryClient
from lamina.images.unpack import unpack_layers

log = logging.getLogger("lamina.images")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
#: finished pulls kept for `progress()` beside those in flight
_RECENT = 32
_MB = 1024 * 1024
#: layers of one image fetched at once (as skopeo and docker do)
_PARALLEL_FETCHES = 4

T = TypeVar("T")


class ImageStore:
    """Images resolved from registries and unpacked under `root` (`<data-dir>/images`).

    The constructor makes the directories and empties `tmp/` (what a crash left staged):
    call it at start-up, before the event loop serves. `close` closes the registry client."""

    def __init__(self, root: Path, registries: Registries) -> None:
        self._root = root
        self._registries = registries
        self._blobs = root / "blobs" / "sha256"
        self._roots = root / "roots"
        self._tmp = root / "tmp"
        for directory in (self._blobs, self._roots):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(mode=0o700)
        self._client = RegistryClient(registries)
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._blob_locks: dict[str, asyncio.Lock] = {}
        self._unpacked: dict[str, UnpackedImage] = {}
        self._progress: OrderedDict[str, PullProgress] = OrderedDict()

    async def resolve(self, uri: str, architecture: str) -> ResolvedImage:
        """The manifest for linux/`architecture` ("x86_64" or "arm64") and its config; no
        layer is fetched. ValueError for a malformed URI; ImageNotFound, ImageAccessDenied,
        RegistryUnreachable or InvalidImage (no image for the architecture among them)."""
        ref = parse_image_uri(uri, self._registries)
        return await self._client.resolve(ref, architecture)

    async def ensure(self, image: ResolvedImage) -> UnpackedImage:
        """`image` unpacked on this node: its missing blobs pulled, then its layers applied
        (once per manifest digest). Raises an ImageError (nothing is left half-written)."""
        hex_digest = _hex(image.digest)
        lock = self._image_locks.setdefault(image.digest, asyncio.Lock())
        async with lock:
            found = self.unpacked(image.digest)
            if found is not None:
                return found
            return await self._pull(image, hex_digest)

    def unpacked(self, digest: str) -> UnpackedImage | None:
        """The image `digest` if it is unpacked here (a stat and a small read the first time
        after a restart; no network)."""
        found = self._unpacked.get(digest)
        if found is not None:
            return found
        match = _DIGEST.fullmatch(digest)
        if match is None:
            return None
        directory = self._roots / match.group(1)
        try:
            saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        found = UnpackedImage(
            digest=digest, rootfs=directory / "rootfs", config=_config_from_json(saved)
        )
        self._unpacked[digest] = found
        return found

    def progress(self) -> list[PullProgress]:
        """Pulls in flight and the latest finished ones, oldest first (copies)."""
        return [dataclasses.replace(p) for p in self._progress.values()]

    async def close(self) -> None:
        await self._client.aclose()

    # -- pulling -----------------------------------------------------------------------------

    async def _pull(self, image: ResolvedImage, hex_digest: str) -> UnpackedImage:
        uri = image.ref.uri
        progress = PullProgress(
            uri=uri,
            digest=image.digest,
            layers_total=len(image.layers),
            bytes_total=sum(size for _, size in image.layers),
            phase="pulling",
        )
        self._track(progress)
        started = time.monotonic()
        try:
            unpacked = await self._fetch_and_unpack(image, hex_digest, progress)
        except ImageError as e:
            self._failed(progress, str(e))
            raise
        except OSError as e:
            # the node's own trouble (a full disk, say): still an image that could not be made
            self._failed(progress, f"unpacking failed on this node: {e}")
            raise ImageError(f"The image {uri} could not be stored on this node ({e}).") from e
        except BaseException:
            self._failed(progress, "cancelled")
            raise
        progress.phase = "ready"
        self._unpacked[image.digest] = unpacked
        log.info(
            "pulled %s (%s): %d layers, %.1f MB in %.2f s",
            uri,
            image.digest,
            len(image.layers),
            progress.bytes_total / _MB,
            time.monotonic() - started,
        )
        return unpacked

    def _track(self, progress: PullProgress) -> None:
        self._progress.pop(progress.digest, None)
        self._progress[progress.digest] = progress
        finished = [d for d, p in self._progress.items() if p.phase in ("ready", "failed")]
        for digest in finished[: max(0, len(finished) - _RECENT)]:
            del self._progress[digest]

    def _failed(self, progress: PullProgress, error: str) -> None:
        progress.phase = "failed"
        progress.error = error
        log.warning("pull of %s (%s) failed: %s", progress.uri, progress.digest, error)

    async def _fetch_and_unpack(
        self, image: ResolvedImage, hex_digest: str, progress: PullProgress
    ) -> UnpackedImage:
        """Every layer of `image` into `blobs/`, a few fetched at a time, while a thread of
        the pull's own unpacks them in order as they arrive. The first failure stops the rest
        (fetches remove what they staged, the thread its staging root, before this returns)
        and is raised: a download's own error rather than what it made the unpacking raise."""
        feeds = [_LayerFeed(digest) for digest, _ in image.layers]
        gate = asyncio.Semaphore(_PARALLEL_FETCHES)
        left = len(image.layers)
        unpacking = _on_own_thread(lambda: self._unpack(image, hex_digest, feeds))

        async def fetch(index: int, digest: str, size: int) -> None:
            nonlocal left
            async with gate:
                await self._blob(image, index, digest, size, progress, feeds[index])
            left -= 1
            if left == 0:
                progress.phase = "unpacking"

        async def unpacked() -> UnpackedImage:
            return await asyncio.shield(unpacking)

        if not image.layers:
            progress.phase = "unpacking"
        try:
            async with asyncio.TaskGroup() as group:
                for index, (digest, size) in enumerate(image.layers):
                    group.create_task(fetch(index, digest, size))
                result = group.create_task(unpacked())
        except BaseExceptionGroup as failed:
            errors = [e for e in failed.exceptions if not isinstance(e, _FeedFailed)]
            raise (errors or failed.exceptions)[0] from None
        finally:
            if not unpacking.done():
                for feed in feeds:
                    feed.fail(_FeedFailed("the pull was stopped"))
                await asyncio.wait([unpacking])
            if not unpacking.cancelled():
                unpacking.exception()  # retrieved (any error was raised above)
        return result.result()

    async def _blob(
        self,
        image: ResolvedImage,
        index: int,
        digest: str,
        size: int,
        progress: PullProgress,
        feed: _LayerFeed,
    ) -> None:
        """Blob `digest` in `blobs/`, fetched unless it is there already, into `feed`."""
        path = self._blobs / _hex(digest)
        which = f"layer {index + 1}/{len(image.layers)} {digest}"
        lock = self._blob_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if path.exists():
                log.info("pulling %s (%s): %s cached", image.ref.uri, image.digest, which)
                feed.finished(path)
            else:
                log.info(
                    "pulling %s (%s): %s (%.1f MB)",
                    image.ref.uri,
                    image.digest,
                    which,
                    size / _MB,
                )
                started = time.monotonic()
                await self._fetch(image, digest, size, path, progress, feed)
                log.info(
                    "pulling %s (%s): %s done in %.2f s",
                    image.ref.uri,
                    image.digest,
                    which,
                    time.monotonic() - started,
                )
                progress.layers_done += 1
                return
        progress.layers_done += 1
        progress.bytes_done += size

    async def _fetch(
        self,
        image: ResolvedImage,
        digest: str,
        size: int,
        path: Path,
        progress: PullProgress,
        feed: _LayerFeed,
    ) -> None:
        staging = self._tmp / f"blob-{_hex(digest)}-{uuid.uuid4().hex}"

        def arrived(n: int) -> None:
            progress.bytes_done += n

        feed.writing(staging)
        try:
            await self._client.fetch_blob(
                image.ref, digest, size, staging, arrived, written=feed.wrote
            )
            feed.finished(path, renamed_from=staging)
        except BaseException as e:
            feed.fail(_FeedFailed(f"the layer {digest} was not fetched: {e}"))
            with contextlib.suppress(OSError):
                staging.unlink()
            raise

    def _unpack(
        self, image: ResolvedImage, hex_digest: str, layers: list[_LayerFeed]
    ) -> UnpackedImage:
        """(On the pull's own thread.) Apply `layers` in a staging directory as they arrive,
        then rename it into `roots/`."""
        staging = self._tmp / f"root-{hex_digest}-{uuid.uuid4().hex}"
        final = self._roots / hex_digest
        staging.mkdir(mode=0o755)
        try:
            unpack_layers(layers, staging / "rootfs")
            (staging / "config.json").write_text(
                json.dumps(dataclasses.asdict(image.config)), encoding="utf-8"
            )
            try:
                os.rename(staging, final)
            except OSError:
                # a pull this one outlived (cancelled, then retried) got there first
                if not (final / "config.json").exists():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            for feed in layers:
                feed.close()
        return UnpackedImage(digest=image.digest, rootfs=final / "rootfs", config=image.config)


class _FeedFailed(Exception):
    """A layer's download failed or was stopped (raised to the unpacking thread; the pull
    raises the download's own error)."""


class _LayerFeed:
    """One layer's blob for the unpacking thread, as its download makes it (a `LayerSource`).

    The store's side says where the bytes go (`writing`), how many more are in the file
    (`wrote`, from the download's writing thread), that the blob is verified and in `blobs/`
    (`finished`: the rename is done here, so the reader never opens a name just moved away),
    or that it failed (`fail`). `read` follows the file as it grows, blocks while it is
    behind the download, ends only once the blob is finished, and raises _FeedFailed as soon
    as the download failed, wherever the reader is."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = threading.Condition()
        self._path: Path | None = None
        self._written = 0
        self._done = False
        self._error: _FeedFailed | None = None
        self._fd: int | None = None
        self._offset = 0

    def writing(self, staging: Path) -> None:
        with self._changed:
            self._path = staging

    def wrote(self, n: int) -> None:
        with self._changed:
            self._written += n
            self._changed.notify_all()

    def finished(self, path: Path, renamed_from: Path | None = None) -> None:
        with self._changed:
            if renamed_from is not None:
                os.replace(renamed_from, path)
            self._path = path
            self._done = True
            self._changed.notify_all()

    def fail(self, error: _FeedFailed) -> None:
        with self._changed:
            if self._error is None:
                self._error = error
            self._changed.notify_all()

    def read(self, n: int, /) -> bytes:
        with self._changed:
            while self._error is None and not self._done and self._written <= self._offset:
                self._changed.wait()
            if self._error is not None:
                raise _FeedFailed(str(self._error))
            assert self._path is not None
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            if not self._done:
                n = min(n, self._written - self._offset)
        data = os.pread(self._fd, n, self._offset)
        self._offset += len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _on_own_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """`work()` run on a new thread; its outcome in the returned future. (Not the loop's
    executor: unpacking waits on downloads whose writes run there.)"""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as e:
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="lamina-unpack", daemon=True).start()
    return future


def _hex(digest: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return match.group(1)


def _config_from_json(saved: dict[str, object]) -> ImageConfig:
    def strings(name: str) -> tuple[str, ...]:
        value = saved.get(name)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    env = saved.get("env")
    return ImageConfig(
        entrypoint=strings("entrypoint"),
        cmd=strings("cmd"),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        working_dir=str(saved.get("working_dir") or ""),
        user=str(saved.get("user") or ""),
        architecture=str(saved.get("architecture") or "x86_64"),
    )
