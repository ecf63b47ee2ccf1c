"""Layers: publishing and reading layer versions, the layers a function may take, and the
merged directory (Lambda's `/opt`) that a function's layers become.

A layer version is immutable: a zip stored once in the content-addressed `CodeStore`, like
function code, plus a row in the metadata store. Version numbers count up per layer name and
are never reused, even after deletes. A function copies the digest of each layer version it
takes, so it keeps running (and can be restarted) after that layer version is deleted, as on
Lambda; the code stays until nothing references it.

`/opt` is built once per distinct list of layer contents, under `<data_dir>/opt/<key>/`, when
a function takes the list (not when an environment starts: that runs on the event loop), from
hard links into the unpacked layers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lamina import limits
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes, listing, packages
from lamina.control import validation as v
from lamina.control.layer_policies import LayerPolicies
from lamina.control.s3_code import S3_MEMBERS, S3Location, s3_constraints, s3_location
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError, ValidationError
from lamina.models import FunctionConfig, FunctionLayer, LayerVersion
from lamina.settings import Settings
from lamina.store import CodeStore, MetadataStore, StoredCode, UnsafePackageError
from lamina.store.blobs import open_dirs
from lamina.store.layer_policies import LayerPolicyStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# A layer (version) ARN, taken apart; the patterns in `validation` decide what is well formed.
_LAYER_ARN = re.compile(
    r"arn:(?:aws[a-zA-Z-]*)?:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"layer:(?P<name>[a-zA-Z0-9_-]+)(?::(?P<version>[0-9]+))?"
)
_KEY = re.compile(r"[0-9a-f]{64}")
_NOT_FOUND = "The resource you requested does not exist."
_NO_CONTENT = (
    "Please provide a source for the layer: Content.ZipFile, or Content.S3Bucket and Content.S3Key."
)
_PAGE_MAX = 50  # MaxLayerListItems


class CodeKeeper(Protocol):
    """What layers share with functions: the one worker thread, and code storage under the
    lock that keeps the collector from removing a package before a row references it."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def storing_code(
        self, data: bytes, operation: str, *, from_s3: bool = False
    ) -> AbstractAsyncContextManager[StoredCode]:
        """Store a checked package; hold the code lock until the block ends; release the
        package again if the block raises."""
        ...

    async def fetch_package(
        self, zip_file: bytes | None, s3: S3Location | None, missing: str
    ) -> tuple[bytes, bool]:
        """The uploaded zip, or the object read from S3, as (bytes, whether from S3)."""
        ...

    async def release_code(self, sha256: str) -> None: ...


@dataclass
class LayerInput:
    """A PublishLayerVersion request as the caller sent it (values not yet checked)."""

    name: Any = None
    content: Any = None
    description: Any = None
    compatible_runtimes: Any = None
    compatible_architectures: Any = None
    license_info: Any = None


@dataclass(frozen=True)
class LayerPage:
    items: list[LayerVersion]
    next_marker: str | None


class LayerService:
    """Layer versions: publish, read, list, delete; and resolving a function's `Layers`."""

    def __init__(
        self, settings: Settings, metadata: MetadataStore, code: CodeStore, keeper: CodeKeeper
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._code = code
        self._keeper = keeper
        self.merges = LayerMerges(settings.data_dir / "opt", code)
        #: each layer version's resource-based policy
        self.policies = LayerPolicies(self, LayerPolicyStore(metadata))
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the control worker."""
        return await self._keeper.run(fn, *args)

    # -- names ---------------------------------------------------------------------

    def layer_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self._settings.region}:{self._settings.account_id}:layer:{name}"

    def version_arn(self, name: str, version: int) -> str:
        return f"{self.layer_arn(name)}:{version}"

    def _local_name(self, value: Any) -> str | None:
        """The layer name in a LayerName parameter; None for a layer of another account or
        region (nothing of that name can exist here). Raises ValidationException."""
        c = v.Constraints()
        checked = v.layer_name(c, value)
        c.check()
        assert checked is not None
        m = _LAYER_ARN.fullmatch(checked)
        if m is None:
            return checked
        if m["region"] != self._settings.region or m["account"] != self._settings.account_id:
            return None
        return m["name"]

    # -- writes --------------------------------------------------------------------

    async def publish(self, req: LayerInput) -> LayerVersion:
        c = v.Constraints()
        raw_name = req.name
        v.layer_name(c, raw_name)
        description = v.description(c, req.description)
        runtimes = v.compatible_runtimes(c, req.compatible_runtimes)
        archs = v.compatible_architectures(c, req.compatible_architectures)
        license_info = v.license_info(c, req.license_info)
        if req.content is None:
            c.fail(None, "content", "Member must not be null")
        s3_constraints(c, req.content, "content.")
        c.check()
        name = self._local_name(raw_name)
        if name is None:
            raise InvalidParameterValueError(
                f"Layers can only be published in this region and account "
                f"({self._settings.region}, {self._settings.account_id})."
            )
        zip_file, s3 = _content_source(req.content)
        draft = LayerVersion(
            name=name,
            version=0,
            code_sha256="",
            code_size=0,
            created=datetime.now(UTC),
            description=description or "",
            compatible_runtimes=runtimes or (),
            compatible_architectures=archs or (),
            license_info=license_info,
        )
        package, from_s3 = await self._keeper.fetch_package(zip_file, s3, _NO_CONTENT)
        async with self._keeper.storing_code(
            package, "PublishLayerVersion", from_s3=from_s3
        ) as stored:
            return await self._keeper.run(
                self._metadata.publish_layer_version,
                replace(draft, code_sha256=stored.sha256, code_size=stored.size),
            )

    async def delete(self, layer_name: Any, version: Any) -> None:
        """Delete one version; a version that does not exist is already deleted (as on
        Lambda). Functions that use it keep its content."""
        number = _version_number(version)
        name = self._local_name(layer_name)
        if name is None:
            return
        gone = await self._keeper.run(self._metadata.delete_layer_version, name, number)
        self.policies.forget(name, number)
        await self.changed(name)
        if gone is not None:
            await self._keeper.release_code(gone.code_sha256)

    async def changed(self, name: str) -> None:
        """Tell the other nodes that the layer `name` changed (a version deleted, a
        policy written); a version published changes nothing they hold."""
        await changes.tell(self.feed, "layer", name)

    async def refresh(self, name: str) -> None:
        """Another node changed the layer `name` ("*": any): its versions are read from
        the database on each use; its policies, held here, are read again."""
        await self.policies.load()

    # -- reads ---------------------------------------------------------------------

    async def get(self, layer_name: Any, version: Any) -> LayerVersion:
        number = _version_number(version)
        name = self._local_name(layer_name)
        found = None
        if name is not None:
            found = await self._keeper.run(self._metadata.get_layer_version, name, number)
        if found is None:
            raise ResourceNotFoundError(_NOT_FOUND)
        return found

    async def get_by_arn(self, arn: Any) -> LayerVersion:
        c = v.Constraints()
        checked = v.layer_version_arn(c, arn)
        c.check()
        assert checked is not None
        m = _LAYER_ARN.fullmatch(checked)
        if (
            m is None  # an AWS-managed `awslayer`: none here
            or m["version"] is None
            or m["region"] != self._settings.region
            or m["account"] != self._settings.account_id
        ):
            raise ResourceNotFoundError(_NOT_FOUND)
        found = await self._keeper.run(
            self._metadata.get_layer_version, m["name"], int(m["version"])
        )
        if found is None:
            raise ResourceNotFoundError(_NOT_FOUND)
        return found

    async def list_layers(
        self, runtime: Any, architecture: Any, marker: Any, max_items: Any
    ) -> LayerPage:
        """Each layer with its newest version that matches the filters, by name."""
        limit, wanted = _list_args(runtime, architecture, max_items)
        after = listing.decode_marker("ListLayers", marker) if marker else None
        versions = await self._keeper.run(self._metadata.all_layer_versions, after)
        latest: dict[str, LayerVersion] = {}
        for lv in versions:  # by name, newest version first
            if lv.name not in latest and wanted(lv):
                latest[lv.name] = lv
        items = list(latest.values())
        if len(items) > limit:
            items = items[:limit]
            return LayerPage(items, listing.encode_marker("ListLayers", items[-1].name))
        return LayerPage(items, None)

    async def list_versions(
        self, layer_name: Any, runtime: Any, architecture: Any, marker: Any, max_items: Any
    ) -> LayerPage:
        """A layer's versions that match the filters, newest first. A layer that does not
        exist has no versions (not an error, as on Lambda)."""
        limit, wanted = _list_args(runtime, architecture, max_items)
        name = self._local_name(layer_name)
        before = None
        if marker:
            decoded = listing.decode_marker("ListLayerVersions", marker)
            if not decoded.isdigit():
                raise listing.invalid_marker()
            before = int(decoded)
        if name is None:
            return LayerPage([], None)
        versions = await self._keeper.run(self._metadata.layer_versions, name)
        items = [lv for lv in versions if wanted(lv) and (before is None or lv.version < before)]
        if len(items) > limit:
            items = items[:limit]
            return LayerPage(
                items, listing.encode_marker("ListLayerVersions", str(items[-1].version))
            )
        return LayerPage(items, None)

    async def zip_path(self, sha256: str) -> Path | None:
        """The stored package with this digest, if a layer version has it."""

        def find() -> Path | None:
            path = self._code.zip_path(sha256)
            if self._metadata.layer_code_exists(sha256) and path.is_file():
                return path
            return None

        return await self._keeper.run(find)

    # -- what functions take ---------------------------------------------------------

    def resolve(
        self, arns: Sequence[str], attached: Iterable[FunctionLayer] = ()
    ) -> tuple[FunctionLayer, ...]:
        """The layer versions a function's `Layers` names, in order, by Lambda's rules.

        Blocking (reads the store): run it on the worker. `arns` has passed
        `validation.layer_arns`. Versions in `attached` (what the function has now) are
        accepted even if they were deleted since: the function already holds their content.
        """
        if len(arns) > limits.LAYERS_MAX:
            raise InvalidParameterValueError(
                f"Cannot reference more than {limits.LAYERS_MAX} layers."
            )
        held = {layer.arn: layer for layer in attached}
        seen: dict[str, str] = {}
        out: list[FunctionLayer] = []
        for arn in arns:
            m = _LAYER_ARN.fullmatch(arn)
            if m is None or m["version"] is None:  # an AWS-managed `awslayer`
                raise InvalidParameterValueError(f"Layer version {arn} does not exist.")
            if m["region"] != self._settings.region:
                raise InvalidParameterValueError(
                    "Layers are not in the same region as the function. Layers are expected "
                    f"to be in region {self._settings.region}."
                )
            name, number = m["name"], int(m["version"])
            own = self.version_arn(name, number)
            layer = held.get(own) if m["account"] == self._settings.account_id else None
            if layer is None:
                found = None
                if m["account"] == self._settings.account_id:
                    found = self._metadata.get_layer_version(name, number)
                if found is None:
                    raise InvalidParameterValueError(f"Layer version {arn} does not exist.")
                layer = FunctionLayer(
                    arn=own, code_sha256=found.code_sha256, code_size=found.code_size
                )
            same_layer = own.rsplit(":", 1)[0]
            if same_layer in seen:
                raise InvalidParameterValueError(
                    "Two different versions of the same layer are not allowed to be "
                    f"referenced in the same function. {seen[same_layer]} and {arn} are "
                    "versions of the same layer."
                )
            seen[same_layer] = arn
            out.append(layer)
        return tuple(out)

    def opt_dir(self, config: FunctionConfig) -> Path:
        """Where `config`'s layers are merged (its /opt). No I/O: the scheduler calls this
        on the event loop; the directory was built when the function took the layers."""
        return self.merges.path(config.layers)


class LayerMerges:
    """The merged `/opt` directories, one per distinct list of layer contents.

    Layout under the root:
      empty/         /opt of a function without layers
      <key>/         the layers of one list merged in order; key = `opt_key(layers)`
      tmp/           directories being built or removed

    Blocking throughout; the caller serialises builds and sweeps (the code lock).
    """

    def __init__(self, root: Path, code: CodeStore) -> None:
        self._root = root
        self._code = code
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        (root / "empty").mkdir(exist_ok=True)
        open_dirs(root / "empty")  # the /opt of functions without layers: sandboxes read it
        for leftover in self._tmp.iterdir():  # from a crash mid-build
            _remove_tree(leftover)

    def path(self, layers: Sequence[FunctionLayer]) -> Path:
        key = opt_key(layers)
        return self._root / (key or "empty")

    def present(self) -> set[str]:
        return {p.name for p in self._root.iterdir() if _KEY.fullmatch(p.name)}

    def build(self, layers: Sequence[FunctionLayer]) -> Path:
        """Merge `layers` into their directory unless it exists. Raises `UnsafePackageError`
        if, merged, a symlink would point outside the directory, and OSError."""
        final = self.path(layers)
        if not layers or final.is_dir():
            return final
        work = self._tmp / uuid.uuid4().hex
        work.mkdir()
        try:
            for layer in layers:
                source = self._code.task_dir(layer.code_sha256)
                if not source.is_dir():
                    raise FileNotFoundError(f"layer code {layer.code_sha256} is not stored")
                _merge(source, work)
            _check_links(work)
            open_dirs(work)
            try:
                os.rename(work, final)
            except OSError:
                if not final.is_dir():  # not a lost race with another builder of the same list
                    raise
        finally:
            _remove_tree(work)
        return final

    def sweep(self, keep: set[str]) -> set[str]:
        """Remove every merged directory whose key is not in `keep`; returns the removed."""
        removed = set()
        for key in self.present() - keep:
            doomed = self._tmp / f"rm-{uuid.uuid4().hex}"
            os.rename(self._root / key, doomed)
            _remove_tree(doomed)
            removed.add(key)
        return removed


def opt_key(layers: Sequence[FunctionLayer]) -> str | None:
    """The name of the directory a list of layers merges into: it depends only on the layers'
    contents and order, so functions with the same layers share it."""
    if not layers:
        return None
    return hashlib.sha256("\n".join(lay.code_sha256 for lay in layers).encode()).hexdigest()


def _merge(source: Path, dest: Path) -> None:
    """Lay `source` over `dest`: what `source` has replaces what is there (a later layer
    overwrites an earlier one's files). Never writes through a symlink."""
    with os.scandir(source) as entries:
        for entry in entries:
            target = dest / entry.name
            if entry.is_symlink():
                _clear(target)
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir(follow_symlinks=False):
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    _clear(target)
                target.mkdir(exist_ok=True)
                _merge(Path(entry.path), target)
            else:
                _clear(target)
                try:
                    os.link(entry.path, target)
                except OSError:  # another filesystem, or links not allowed: copy
                    shutil.copy2(entry.path, target)


def _check_links(root: Path) -> None:
    """Each layer's symlinks stay inside that layer, but merged, one layer's link can lead
    through another's (`a -> .` and `b -> a/../x`): check where each chain really ends."""
    top = os.path.realpath(root)
    for here, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(here, name)
            if not os.path.islink(path):
                continue
            real = os.path.realpath(path)
            if real != top and not real.startswith(top + os.sep):
                raise UnsafePackageError(
                    f"symlink '{os.path.relpath(path, root)}' points outside /opt once the "
                    "layers are merged"
                )


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _content_source(content: Any) -> tuple[bytes | None, S3Location | None]:
    if not isinstance(content, dict):
        raise ValidationError(
            f"1 validation error detected: Value '{content}' at 'content' failed to satisfy "
            "constraint: Member must be a structure"
        )
    unsupported = sorted(
        k
        for k, val in content.items()
        if k != "ZipFile" and k not in S3_MEMBERS and val is not None
    )
    if unsupported:
        raise InvalidParameterValueError(
            f"Lamina does not support {', '.join('Content.' + k for k in unsupported)} yet: "
            "give the layer as Content.ZipFile or Content.S3Bucket and Content.S3Key."
        )
    s3 = s3_location(content, "content.")
    if content.get("ZipFile") is None:
        if s3 is None:
            raise InvalidParameterValueError(_NO_CONTENT)
        return None, s3
    return packages.decode_zip_file(content["ZipFile"], "PublishLayerVersion"), s3


def _version_number(value: Any) -> int:
    c = v.Constraints()
    number = v.long_value(c, value, "versionNumber")
    c.check()
    assert number is not None
    if number < 1:
        raise InvalidParameterValueError("Layer Version Cannot be less than 1")
    return number


def _list_args(
    runtime: Any, architecture: Any, max_items: Any
) -> tuple[int, Callable[[LayerVersion], bool]]:
    c = v.Constraints()
    wanted_runtime = v.compatible_runtime(c, runtime)
    wanted_arch = v.compatible_architecture(c, architecture)
    limit = _PAGE_MAX
    if max_items is not None:
        number = v.long_value(c, max_items, "maxItems")
        if number is not None:
            limit = c.integer(number, "maxItems", 1, _PAGE_MAX) or limit
    c.check()

    def wanted(lv: LayerVersion) -> bool:
        # A filter keeps only versions that say they are compatible: one that lists no
        # runtimes (or architectures) says nothing, so a filter leaves it out.
        if wanted_runtime is not None and wanted_runtime not in lv.compatible_runtimes:
            return False
        return wanted_arch is None or wanted_arch in lv.compatible_architectures

    return limit, wanted
