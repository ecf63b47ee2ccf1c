"""Code on disk: packages checked and stored by digest (uploaded or read from S3), the merged
layer directories functions see as /opt, and their removal once nothing uses them.

One lock orders every change of stored code: it is held from storing a package until a row
references it, and while deciding to delete one, so that a create can never reuse a package
the collector is removing. Functions and layers share it (`control.layers.CodeKeeper` is the
part layers see).
"""

from __future__ import annotations

import asyncio
import logging
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from lamina.control import packages
from lamina.control.layers import LayerMerges, opt_key
from lamina.control.s3_code import S3CodeFetcher, S3Location
from lamina.errors import (
    InvalidParameterValueError,
    ServiceError,
    StorageFullError,
    is_disk_full,
)
from lamina.models import FunctionConfig, FunctionLayer
from lamina.store import CodeStore, MetadataStore, StoredCode, UnsafePackageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class FunctionCode:
    """The packages and merged layers of every function version and layer version."""

    def __init__(
        self,
        code: CodeStore,
        metadata: MetadataStore,
        s3: S3CodeFetcher,
        run: Callable[..., Awaitable[Any]],
        configs: Callable[[], list[FunctionConfig]],
    ) -> None:
        """`run(fn, *args)` runs blocking store work on the control worker; `configs()` is
        every function version Lamina knows (what references code and merged layers)."""
        self.store_dir = code
        self._metadata = metadata
        self._s3 = s3
        self._run = run
        self._configs = configs
        #: held from storing code until a row references it, and while deleting code
        self.lock = asyncio.Lock()
        self._users: list[Callable[[str], bool]] = []
        #: where merged /opt directories are built (the layer service's, set once it exists)
        self.merges: LayerMerges | None = None
        # Merged /opt directory (by key) -> the code of every version that has run with it:
        # the directory stays while an environment may still run one of them.
        self._opt_users: dict[str, set[str]] = {}
        #: cluster mode: shares a stored package with the other nodes (`cluster.code`); a
        #: package is not referenced before it is shared
        self.share: Callable[[str], Awaitable[None]] | None = None

    def add_user(self, in_use: Callable[[str], bool]) -> None:
        """Code that `in_use(sha)` says is still running is not deleted."""
        self._users.append(in_use)

    def close(self) -> None:
        self._s3.close()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work on the control worker (which serialises writers)."""
        result: T = await self._run(fn, *args)
        return result

    # -- packages ------------------------------------------------------------------

    async def fetch_package(
        self, zip_file: bytes | None, s3: S3Location | None, missing: str
    ) -> tuple[bytes, bool]:
        """The package a request names, as (bytes, whether it came from S3): the uploaded
        zip, or the object read from the S3 endpoint. `missing` is the error when neither is
        given. Call it before taking the lock: reading S3 may take a while."""
        if s3 is not None:
            if zip_file is not None:
                raise InvalidParameterValueError(
                    "Please don't provide both a ZipFile and an S3 location for the code."
                )
            return await self._s3.fetch(s3), True
        if zip_file is None:
            raise InvalidParameterValueError(missing)
        return zip_file, False

    @asynccontextmanager
    async def storing_code(
        self, data: bytes, operation: str, *, from_s3: bool = False
    ) -> AsyncIterator[StoredCode]:
        """Check and store a package, holding the lock until the block has recorded a
        reference to it; if the block raises, the package is released again."""
        async with self.lock:
            stored = await self.store(data, operation, from_s3=from_s3)
            try:
                yield stored
            except BaseException:
                await self.release_locked(stored.sha256)
                raise

    async def store(self, data: bytes, operation: str, *, from_s3: bool = False) -> StoredCode:
        """Check and store a package (call with the lock held)."""
        checked = await self.run(partial(packages.check_package, from_s3=from_s3), data, operation)
        try:
            stored: StoredCode = await self.run(self.store_dir.put, checked.data)
        except UnsafePackageError as e:
            raise packages.unzip_failed(str(e)) from None
        except (zipfile.BadZipFile, EOFError, ValueError, UnicodeDecodeError):
            raise packages.unzip_failed() from None
        except OSError as e:
            if is_disk_full(e):
                raise StorageFullError("the code") from None
            log.exception("storing code failed")
            raise ServiceError(f"Lamina could not store the code: {e.strerror}") from None
        if self.share is not None:
            try:
                await self.share(stored.sha256)
            except Exception as e:
                log.warning("sharing code %s with the cluster failed: %s", stored.sha256, e)
                await self.release_locked(stored.sha256)
                raise ServiceError(
                    "Lamina could not share the code with the other nodes of its cluster "
                    f"(NATS object store): {e}"
                ) from None
        return stored

    async def release_code(self, sha256: str) -> None:
        """Delete this code if nothing uses it any more (and merged layers no one uses)."""
        async with self.lock:
            await self.release_locked(sha256)

    async def release_locked(self, sha256: str) -> None:
        """`release_code` with the lock held."""
        # Environments that stopped may have been the last users of a merged /opt.
        await self.sweep_opt_locked()
        if any(in_use(sha256) for in_use in self._users):
            return
        if await self.run(self._metadata.code_in_use, sha256):
            return
        await self.run(self.store_dir.remove, sha256)

    def task_root(self, sha256: str) -> Path:
        return self.store_dir.task_dir(sha256)

    def zip_path(self, sha256: str) -> Path | None:
        """The stored package with this digest, if a function uses it."""
        path = self.store_dir.zip_path(sha256)
        in_use = any(c.code_sha256 == sha256 for c in self._configs())
        return path if in_use and path.is_file() else None

    # -- merged layers -------------------------------------------------------------

    async def merge_layers(self, layers: tuple[FunctionLayer, ...]) -> None:
        """Build the function's /opt now, so that starting an environment does no file work.
        Call with the lock held (the layers' code must stay while they are merged)."""
        assert self.merges is not None
        try:
            await self.run(self.merges.build, layers)
        except UnsafePackageError as e:
            raise InvalidParameterValueError(f"The layers cannot be merged: {e}.") from None
        except OSError as e:
            log.exception("merging layers failed")
            raise ServiceError(f"Lamina could not merge the layers: {e}") from None

    def track_opt(self, config: FunctionConfig) -> None:
        """Remember that `config`'s code may run with its merged /opt."""
        key = opt_key(config.layers)
        if key is not None:
            self._opt_users.setdefault(key, set()).add(config.code_sha256)

    async def sweep_opt_locked(self) -> None:
        """Remove merged /opt directories that no function uses and no environment may be
        running with (environments are known by their code: a conservative test)."""
        assert self.merges is not None
        keep = {opt_key(c.layers) for c in self._configs()} - {None}
        for key, shas in self._opt_users.items():
            if any(in_use(sha) for sha in shas for in_use in self._users):
                keep.add(key)
        await self.run(self.merges.sweep, {k for k in keep if k is not None})
        for key in [k for k in self._opt_users if k not in keep]:
            del self._opt_users[key]
