"""Functions: create, update, delete and publish, and the sub-services hung on a function.

Durable state lives in the metadata store; `FunctionService` is the in-memory view of it
(`function_catalog.FunctionCatalog`: resolving what an invocation runs, and every read) plus
the writes that change both, on the catalog's one worker thread, which serialises writers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from lamina import limits
from lamina.arns import FunctionRef
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes, images, snapstart
from lamina.control import validation as v
from lamina.control import vpc as vpcs
from lamina.control.aliases import AliasService, is_alias_name
from lamina.control.capacity_providers import CapacityProviders
from lamina.control.code_signing import CodeSigning
from lamina.control.concurrency import ReservedConcurrency
from lamina.control.event_invoke import EventInvokeConfigs
from lamina.control.function_catalog import FunctionCatalog
from lamina.control.function_code import FunctionCode
from lamina.control.function_input import (
    FunctionInput,
    checked_tags,
    configuration,
    same_content,
)
from lamina.control.function_policies import FunctionPolicies
from lamina.control.function_urls import FunctionUrls
from lamina.control.images import ImageFunctions
from lamina.control.layers import LayerService
from lamina.control.provisioned import ProvisionedConcurrency
from lamina.control.recursion import RecursionConfigs
from lamina.control.resource_policies import ResourcePolicies
from lamina.control.runtime_management import RuntimeManagement
from lamina.control.s3_code import S3CodeFetcher, s3_constraints, s3_location
from lamina.control.scaling import FunctionScaling
from lamina.control.tags import CodeSigningConfigTags, FunctionTags, TagService, check_tag_limits
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ServiceError,
    UserError,
)
from lamina.models import (
    LATEST,
    CodeSigningConfig,
    Function,
    FunctionConfig,
    FunctionLayer,
    FunctionState,
    LoggingConfig,
    UpdateStatus,
)
from lamina.networks import VpcDirectory
from lamina.runtimes.catalog import RuntimeCatalog
from lamina.settings import Settings
from lamina.store import CodeStore, MetadataStore, UnsafePackageError
from lamina.store.capacity import CapacityStore
from lamina.store.code_signing import CodeSigningStore
from lamina.store.function_policies import FunctionPolicyStore
from lamina.store.function_settings import FunctionSettingsStore
from lamina.store.function_urls import FunctionUrlStore

log = logging.getLogger(__name__)

#: `listener(name, version)`: `version` None means every version (the function was deleted)
ChangeListener = Callable[[str, str | None], Awaitable[None]]

#: how many times (every 50 ms) a state move waits for a write of the function to end
_SETTLE_WAITS = 1200

#: how many times a refresh reads again while writes here overlap it
_REREADS = 3

_NO_CODE = "Please provide a source for function code: ZipFile, or S3Bucket and S3Key."


def _now() -> datetime:
    return datetime.now(UTC)


def _as_accepted(config: FunctionConfig) -> FunctionConfig:
    """An update's answer: the change applies at once here, but Lambda answers while it is
    still under way, with the reason Lambda gives (its wording, "being created", for updates
    too); GetFunction then shows Successful."""
    return replace(
        config,
        last_update_status=UpdateStatus.IN_PROGRESS,
        last_update_status_reason="The function is being created.",
        last_update_status_reason_code="Creating",
    )


class FunctionService(FunctionCatalog):
    """The catalog of functions, the writes that change it, and the sub-services (aliases,
    concurrency, URLs, policies, ...) that keep settings of a function."""

    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        code: CodeStore,
        runtimes: RuntimeCatalog,
    ) -> None:
        super().__init__(settings, metadata)
        self._code = code
        self._runtimes = runtimes
        self._vpcs = VpcDirectory(settings.vpcs)
        self._busy: set[str] = set()  # names with a create/update/delete under way
        #: busy names another node changed meanwhile: refreshed once the write here is done
        self._stale: set[str] = set()
        self._refreshes: set[asyncio.Task[None]] = set()
        #: writes committed here so far (a refresh that overlapped one reads again)
        self._written = 0
        self._listeners: list[ChangeListener] = []
        #: packages (uploaded or from `--s3-endpoint`), merged layers, and their removal
        self.code = FunctionCode(
            code,
            metadata,
            S3CodeFetcher(settings.s3_endpoint, settings.region),
            self._run,
            self._all_configs,
        )
        #: the layer operations, which share this service's worker and code lock
        self.layers = LayerService(settings, metadata, code, keeper=self.code)
        self.code.merges = self.layers.merges
        #: the alias operations, which share this service's worker
        self.aliases = AliasService(self, metadata)
        #: reserved concurrency and the account's limits
        self.concurrency = ReservedConcurrency(self, metadata, settings)
        #: provisioned concurrency per version or alias
        self.provisioned = ProvisionedConcurrency(self, metadata)
        #: asynchronous invocation settings per qualifier, and where failed events may go
        self.event_invoke = EventInvokeConfigs(self, metadata, settings)
        #: function URLs per `$LATEST` or alias
        self.urls = FunctionUrls(self, FunctionUrlStore(metadata))
        #: resource-based policies per function, version or alias
        self.policies = FunctionPolicies(self, FunctionPolicyStore(metadata))
        function_settings = FunctionSettingsStore(metadata)
        #: UpdateRuntimeOn per `$LATEST` or version, and the host's runtime version ARNs
        self.runtime_management = RuntimeManagement(self, function_settings, runtimes, settings)
        #: RecursiveLoop per function, and the trace Lineage that counts a chain
        self.recursion = RecursionConfigs(self, function_settings)
        capacity_store = CapacityStore(metadata)
        #: capacity providers (named shares of this host's CPU) and the versions on them
        self.capacity = CapacityProviders(
            self, capacity_store, settings, lambda: set(runtimes.architectures)
        )
        #: Min/MaxExecutionEnvironments of versions on a capacity provider
        self.scaling = FunctionScaling(self, capacity_store, self.capacity)
        self.capacity.on_attach = self.scaling.apply
        #: whole policy documents by resource ARN (the same policies as `policies`)
        self.resource_policies = ResourcePolicies(self, settings.region, settings.account_id)
        #: tags by resource ARN; other kinds of resources register their own holders
        self.tags = TagService(settings.region, settings.account_id)
        self.tags.register("function", FunctionTags(self.run, metadata))
        #: code signing configurations, trusted signers, and the check of each package
        self.signing = CodeSigning(self, CodeSigningStore(metadata), settings)
        self.tags.register(
            "code-signing-config",
            CodeSigningConfigTags(self.signing.read_tags, self.signing.write_tags),
        )
        #: SnapStart: makes the template of a version published here, in the background (the
        #: server gives it the scheduler's; other nodes make theirs at their first cold start)
        self.on_snapshot: Callable[[FunctionConfig], None] = lambda config: None
        #: refuses a Role Lambda could not assume (the server sets RoleService's check)
        self.check_role: Callable[[str], None] = lambda arn: None
        #: the other nodes on the same database (`cluster.api.ChangeFeed`; the server sets it)
        self.feed: ChangeFeed = NoFeed()
        #: container-image functions: resolved at the call, pulled behind it (the server
        #: gives it the node's image store)
        self.images = ImageFunctions(None, self.settle)

    # -- wiring --------------------------------------------------------------------

    async def load(self) -> None:
        """Fill the in-memory view from the store and drop unreferenced code."""
        configs = await self._run(self._metadata.all_versions)
        self._latest = {c.name: c for c in configs if c.version == LATEST}
        self._versions = {(c.name, c.version): c for c in configs if c.version != LATEST}
        self.aliases.load(await self._run(self._metadata.all_aliases))
        await self._load_settings()
        await self.layers.policies.load()
        # A crash between forgetting a function and deleting its code leaves orphans.
        referenced = await self._run(self._metadata.referenced_code)
        for sha in await self._run(self._code.stored):
            if sha not in referenced:
                await self._run(self._code.remove, sha)
        for config in configs:
            if config.layers:
                self.code.track_opt(config)
                try:
                    await self._run(self.layers.merges.build, config.layers)
                except (OSError, UnsafePackageError) as e:
                    log.error("could not merge the layers of %s: %s", config.name, e)
        async with self.code.lock:
            await self.code.sweep_opt_locked()

    def subscribe(self, listener: ChangeListener) -> None:
        """Call `listener(name, version)` after a function was created, its `$LATEST` changed,
        a version was published or deleted (`version` names it), or the function was deleted
        (`version` None). The scheduler retires environments; the sandbox backend prepares for
        the runtimes in use."""
        self._listeners.append(listener)

    def close(self) -> None:
        self.code.close()
        self._worker.shutdown(wait=True)
        self._metadata.close()

    # -- writes --------------------------------------------------------------------

    async def create(
        self, req: FunctionInput, code_signing_config_arn: Any = None
    ) -> FunctionConfig:
        """Create a function. Returns its configuration as of acceptance (State Pending).
        With a code signing configuration, the package must pass its checks.

        Checked in Lambda's order: every constraint of the model at once (one
        ValidationException listing them), then what the values mean
        (InvalidParameterValueException)."""
        c = v.Constraints()
        if isinstance(req.name, str) and ":" in req.name:
            # CreateFunction takes an ARN or partial ARN too, but not a qualified one.
            ref = self.ref(req.name)
            if ref.qualifier is not None:
                raise InvalidParameterValueError(
                    "A function name cannot include a qualifier when creating a function."
                )
            req.name = ref.name
        name = v.function_name(c, req.name)
        v.package_type(c, req.package_type)
        fields = configuration(c, req, creating=True)
        archs = v.architectures(c, req.architectures)
        tags = checked_tags(c, req.tags)
        layer_arns = v.layer_arns(c, req.layers)
        s3_constraints(c, req.s3_code, "code.")
        uri = images.image_uri(c, req.image_uri, "code.imageUri")
        c.check()
        assert name is not None
        self._refuse_unsupported(req)
        other_code = req.zip_file is not None or bool(req.s3_code)
        is_image = images.check_create(req.package_type, uri, fields, layer_arns, other_code)
        overrides = fields.pop("image_overrides", None)
        if not is_image:
            v.require_runtime(fields)
        if tags:
            check_tag_limits(tags)
        if not is_image and "handler" not in fields:
            raise InvalidParameterValueError(
                "The Handler parameter is required when PackageType is Zip."
            )
        if not is_image:
            v.runtime_available(fields["runtime"], self._runtimes)
        snapstart.check_fields(
            fields.get("snap_start", "None"),
            fields.get("runtime", ""),
            is_image,
            fields.get("ephemeral_storage", limits.EPHEMERAL_DEFAULT_MB),
        )
        v.architecture_available(archs, self._runtimes)
        self.check_role(fields["role"])
        self._check_dead_letter(name, fields)
        if "vpc" in fields:
            fields["vpc"] = vpcs.resolve(self._vpcs, fields["vpc"])
        if "logging" in fields:
            fields["logging"] = v.merge_logging(LoggingConfig(), fields["logging"])
        s3 = s3_location(req.s3_code or {}, "code.")
        if name in self._latest or name in self._busy:
            raise ResourceConflictError(f"Function already exist: {name}")
        if is_image:
            assert uri is not None
            return await self._create_image(
                name, uri, overrides, archs or ("x86_64",), fields, tags
            )
        signing = self.signing.config_for_new_function(code_signing_config_arn)
        with self.signing.holding(signing):
            self._busy.add(name)
            try:
                package, from_s3 = await self.code.fetch_package(req.zip_file, s3, _NO_CODE)
                signed_by = None
                if signing is not None:
                    signed_by = await self._run(self.signing.check, name, signing, package)
                draft = FunctionConfig(
                    name=name,
                    version=LATEST,
                    architectures=archs or ("x86_64",),
                    code_sha256="",
                    code_size=0,
                    revision_id=str(uuid.uuid4()),
                    last_modified=_now(),
                    # The code is unpacked before the row is written, so the stored function
                    # is Active at once; the answer below still says Pending, as it was while
                    # unpacking.
                    state=FunctionState.ACTIVE,
                    signed_by=signed_by,
                    **fields,
                )
                async with self.code.lock:
                    # Layers first: a refused layer leaves no code behind.
                    layers = await self._take_layers(layer_arns or [], ())
                    if signing is not None and layers:
                        await self._run(self._check_layer_signatures, name, signing, layers)
                    stored = await self.code.store(package, "CreateFunction", from_s3=from_s3)
                    config = replace(
                        draft, code_sha256=stored.sha256, code_size=stored.size, layers=layers
                    )
                    try:
                        await self.code.merge_layers(layers)
                        created = await self._run(
                            self._metadata.create_function, config, tags or {}
                        )
                    except BaseException:
                        await self.code.release_locked(stored.sha256)
                        raise
                    if not created:
                        await self.code.release_locked(stored.sha256)
                        raise ResourceConflictError(f"Function already exist: {name}")
                    self._latest[name] = config
                    self.code.track_opt(config)
                if signing is not None:
                    await self.signing.link_new(name, signing)
            finally:
                self._done(name)
        await self._notify(name, LATEST)
        return replace(
            config,
            state=FunctionState.PENDING,
            state_reason="The function is being created.",
            state_reason_code="Creating",
        )

    async def update_code(
        self,
        ref: FunctionRef,
        zip_file: bytes | None,
        revision_id: Any,
        architectures: Any = None,
        s3_code: dict[str, Any] | None = None,
        image_uri: Any = None,
    ) -> FunctionConfig:
        """Replace `$LATEST`'s code with an uploaded zip or one read from S3 (`s3_code`: the
        request's S3Bucket/S3Key/S3ObjectVersion members), or an image function's image."""
        if ref.qualifier is not None:
            self._check_qualifier(ref)
        c = v.Constraints()
        archs = v.architectures(c, architectures)
        s3_constraints(c, s3_code, "")
        uri = images.image_uri(c, image_uri, "imageUri")
        c.check()
        s3 = s3_location(s3_code or {}, "")
        v.architecture_available(archs, self._runtimes)
        existing = self._latest.get(ref.name)
        if existing is not None:
            images.check_update_code(existing, uri, zip_file is not None or s3 is not None)
        if uri is not None:
            return await self._update_image(ref.name, uri, revision_id, archs)
        if zip_file is None and s3 is None:
            raise InvalidParameterValueError(_NO_CODE)
        current = self._begin_update(ref.name, revision_id)
        try:
            package, from_s3 = await self.code.fetch_package(zip_file, s3, _NO_CODE)
            signing = self.signing.of_function(ref.name)
            signed_by = None
            if signing is not None:
                signed_by = await self._run(self.signing.check, ref.name, signing, package)
            async with self.code.lock:
                stored = await self.code.store(package, "UpdateFunctionCode", from_s3=from_s3)
                new = replace(
                    current,
                    code_sha256=stored.sha256,
                    code_size=stored.size,
                    architectures=archs or current.architectures,
                    signed_by=signed_by,
                    revision_id=str(uuid.uuid4()),
                    last_modified=_now(),
                    last_update_status=UpdateStatus.SUCCESSFUL,
                )
                try:
                    await self._commit(current, new)
                except BaseException:
                    await self.code.release_locked(stored.sha256)
                    raise
                self.code.track_opt(new)
        finally:
            self._done(ref.name)
        if current.code_sha256 != new.code_sha256:
            await self.code.release_code(current.code_sha256)
        return _as_accepted(new)

    async def update_config(self, ref: FunctionRef, req: FunctionInput) -> FunctionConfig:
        if ref.qualifier is not None:
            self._check_qualifier(ref)
        c = v.Constraints()
        changes = configuration(c, req, creating=False)
        layer_arns = v.layer_arns(c, req.layers)
        c.check()
        self._refuse_unsupported(req)
        existing = self._latest.get(ref.name)
        if existing is not None:
            images.check_update_config(existing, changes, layer_arns)
        overrides = changes.pop("image_overrides", None)
        if existing is not None and existing.image is not None and overrides is not None:
            changes["image"] = replace(existing.image, overrides=overrides)
        if existing is not None:
            snapstart.check(
                replace(existing, **{k: changes[k] for k in snapstart.FIELDS if k in changes})
            )
        if "runtime" in changes:
            v.runtime_available(changes["runtime"], self._runtimes)
            self.runtime_management.check_runtime_change(ref.name, changes["runtime"])
        if "role" in changes:
            self.check_role(changes["role"])
        self._check_dead_letter(ref.name, changes)
        if "vpc" in changes:
            changes["vpc"] = vpcs.resolve(self._vpcs, changes["vpc"])
        if "durable" in changes:
            existing = self._latest.get(ref.name)
            if existing is not None and existing.durable is None:
                # Lambda turns durable execution on only when the function is created.
                raise InvalidParameterValueError(
                    "Durable execution can only be enabled when the function is created."
                )
        current = self._begin_update(ref.name, req.revision_id)
        try:
            if "logging" in changes:
                changes["logging"] = v.merge_logging(current.logging, changes["logging"])
            if layer_arns is None:
                new = self._updated(current, changes)
                await self._commit(current, new)
            else:
                # Under the code lock: the merged /opt must not be swept before the new
                # configuration that uses it is committed.
                async with self.code.lock:
                    layers = await self._take_layers(layer_arns, current.layers)
                    signing = self.signing.of_function(ref.name)
                    if signing is not None and layers:
                        await self._run(self._check_layer_signatures, ref.name, signing, layers)
                    await self.code.merge_layers(layers)
                    new = self._updated(current, {**changes, "layers": layers})
                    await self._commit(current, new)
                    self.code.track_opt(new)
        finally:
            self._done(ref.name)
        dropped = {lay.code_sha256 for lay in current.layers} - {
            lay.code_sha256 for lay in new.layers
        }
        for sha in dropped:
            await self.code.release_code(sha)
        if current.layers != new.layers and not dropped:
            async with self.code.lock:
                await self.code.sweep_opt_locked()
        return _as_accepted(new)

    def _updated(self, current: FunctionConfig, changes: dict[str, Any]) -> FunctionConfig:
        return replace(
            current,
            **changes,
            revision_id=str(uuid.uuid4()),
            last_modified=_now(),
            last_update_status=UpdateStatus.SUCCESSFUL,
        )

    async def delete(self, ref: FunctionRef) -> None:
        if ref.qualifier == LATEST:
            raise InvalidParameterValueError(
                "$LATEST version cannot be deleted without deleting the function."
            )
        if ref.qualifier is not None:
            await self._delete_version(ref.name, ref.qualifier)
            return
        current = self._latest.get(ref.name)
        if current is None:
            raise self._not_found(ref.name)
        if ref.name in self._busy:
            raise self._conflict(ref.name)
        self._busy.add(ref.name)
        try:
            await self._run(self._metadata.delete_function, ref.name)
            gone = [c for k, c in self._versions.items() if k[0] == ref.name]
            self._forget_function(ref.name)
        finally:
            self._done(ref.name)
        await self._notify(ref.name, None)
        await self._release_configs([current, *gone])

    async def _delete_version(self, name: str, version: str) -> None:
        if is_alias_name(version):
            # DeleteFunction's Qualifier names a version; an alias is deleted by DeleteAlias.
            raise InvalidParameterValueError(
                f"Deletion of aliases is not supported by DeleteFunction: use DeleteAlias "
                f"({self.arn(name, version)})."
            )
        config = self._versions.get((name, version))
        if config is None:
            raise self._not_found(name, version)
        users = self.aliases.referencing(name, version)
        if users:
            raise ResourceConflictError(
                "Unable to delete version because the following aliases reference it: "
                f"[{', '.join(users)}]"
            )
        if name in self._busy:
            raise self._conflict(name)
        self._busy.add(name)
        try:
            await self.provisioned.forget(name, version)
            await self._run(self._metadata.delete_version, name, version)
            self._versions.pop((name, version), None)
            self.event_invoke.forget(name, version)
            self.policies.forget(name, version)
            self.runtime_management.forget(name, version)
            self.scaling.forget(name, version)
            self.capacity.forget(name, version)
        finally:
            self._done(name)
        await self._notify(name, version)
        await self._release_configs([config])

    async def _release_configs(self, configs: Sequence[FunctionConfig]) -> None:
        """Delete the code (and layers) of versions that are gone, where nothing else uses it."""
        shas = {c.code_sha256 for c in configs}
        shas |= {lay.code_sha256 for c in configs for lay in c.layers}
        for sha in shas:
            await self.code.release_code(sha)

    # -- container images ----------------------------------------------------------

    async def _create_image(
        self,
        name: str,
        uri: str,
        overrides: Any,
        archs: tuple[str, ...],
        fields: dict[str, Any],
        tags: dict[str, str] | None,
    ) -> FunctionConfig:
        """CreateFunction of an image function: resolved now, stored Pending, pulled behind."""
        self._busy.add(name)
        try:
            resolved = await self.images.resolve(uri, archs[0])
            config = images.new_function(name, resolved, overrides, archs, fields, _now())
            if not await self._run(self._metadata.create_function, config, tags or {}):
                raise ResourceConflictError(f"Function already exist: {name}")
            self._latest[name] = config
        finally:
            self._done(name)
        await self._notify(name, LATEST)
        self.images.pull(name, resolved, archs[0])
        return config

    async def _update_image(
        self, name: str, uri: str, revision_id: Any, archs: tuple[str, ...] | None
    ) -> FunctionConfig:
        """UpdateFunctionCode of an image function: InProgress while the new image is pulled;
        the previous one serves meanwhile (see `images`)."""
        current = self._begin_update(name, revision_id)
        try:
            assert current.image is not None
            archs = archs or current.architectures
            resolved = await self.images.resolve(uri, archs[0])
            new = _as_accepted(images.new_code(current, resolved, archs, _now()))
            await self._commit(current, new)
        finally:
            self._done(name)
        self.images.pull(name, resolved, archs[0])
        return new

    async def settle(
        self, name: str, change: Callable[[FunctionConfig], FunctionConfig | None]
    ) -> None:
        """Rewrite in place each version of `name` that `change` gives a new configuration
        (a background task's state move: an image pulled), once no write of it is under way."""
        for _ in range(_SETTLE_WAITS):  # a create or update of it ends within seconds
            if name not in self._busy:
                break
            await asyncio.sleep(0.05)
        held = [c for k, c in self._versions.items() if k[0] == name]
        if name in self._latest:
            held.append(self._latest[name])
        told: list[str] = []
        self._busy.add(name)
        try:
            for config in held:
                new = change(config)
                if new is None:
                    continue
                new = replace(new, revision_id=str(uuid.uuid4()))
                ok = await self._run(
                    partial(self._metadata.replace_version, new, expect_revision=config.revision_id)
                )
                if not ok:
                    self._stale.add(name)
                    continue
                if new.version == LATEST:
                    self._latest[name] = new
                else:
                    self._versions[(name, new.version)] = new
                told.append(new.version)
        finally:
            self._done(name)
        for version in told:
            await self._notify(name, version)

    # -- versions ------------------------------------------------------------------

    async def publish(
        self,
        ref: FunctionRef,
        code_sha256: Any = None,
        description: Any = None,
        revision_id: Any = None,
        *,
        creating: bool = False,
    ) -> FunctionConfig:
        """PublishVersion: snapshot `$LATEST` as the next numbered version; if neither code
        nor configuration changed since the last version, that version (as Lambda does).
        `creating`: CreateFunction's Publish, which publishes a function still Pending."""
        self._check_qualifier(ref)
        c = v.Constraints()
        if code_sha256 is not None:
            c.string(code_sha256, "codeSha256", max_len=1024)
        if description is not None:
            c.string(description, "description", max_len=256)
        c.check()
        current = self._begin_update(ref.name, revision_id, settled=not creating)
        try:
            if code_sha256 is not None and code_sha256 != current.code_sha256_b64:
                raise InvalidParameterValueError(
                    f"CodeSHA256 ({code_sha256}) is different from current CodeSHA256 in "
                    f"$LATEST ({current.code_sha256_b64}). Please try again"
                )
            last = self._last_version(ref.name)
            if last is not None and same_content(last, current):
                return last
            draft = replace(
                current,
                description=current.description if description is None else description,
                revision_id=str(uuid.uuid4()),
                last_modified=_now(),
                # an image function published while its image is pulled is as Pending
                state=current.state if current.is_image else FunctionState.ACTIVE,
                last_update_status=UpdateStatus.SUCCESSFUL,
            )
            # a SnapStart version is Pending until its template is made (`snapstart`)
            draft = snapstart.published(draft)
            published = await self._run(
                partial(self._metadata.publish_version, draft, expect_revision=current.revision_id)
            )
            if published is None:
                raise await self._lost_race(ref.name)
            self._versions[(published.name, published.version)] = published
            self.code.track_opt(published)
            # Publishing is a change of the function: Lambda gives `$LATEST` a new RevisionId
            # (a caller holding the old one must re-read). Its content is unchanged, so the
            # change listeners (which retire environments) are not told.
            latest = replace(current, revision_id=str(uuid.uuid4()))
            ok = await self._run(
                partial(self._metadata.replace_version, latest, expect_revision=current.revision_id)
            )
            if ok:
                self._latest[latest.name] = latest
            await self.capacity.published(published.name, published.version)
        finally:
            self._done(ref.name)
        await self._notify(ref.name, published.version)
        if snapstart.building(published):
            self.on_snapshot(published)
        return published

    def _last_version(self, name: str) -> FunctionConfig | None:
        numbered = [c for (n, _), c in self._versions.items() if n == name]
        return max(numbered, key=lambda c: int(c.version)) if numbered else None

    # -- changes another node made -------------------------------------------------

    async def resolve_current(self, ref: FunctionRef) -> FunctionConfig:
        """`resolve`, read again from the database before answering that `ref` does not
        exist when other nodes share it: a function, version or alias another node has just
        committed may not have reached this node's memory through the feed yet, and a client
        that created it there and invokes it here must find it (read after write)."""
        try:
            return self.resolve(ref)
        except ResourceNotFoundError:
            if isinstance(self.feed, NoFeed):
                raise
        await self.refresh(ref.name)
        return self.resolve(ref)

    async def get(self, ref: FunctionRef) -> Function:
        """GetFunction's read, as `resolve_current`: read again before answering not found."""
        try:
            return await super().get(ref)
        except ResourceNotFoundError:
            if isinstance(self.feed, NoFeed):
                raise
        await self.refresh(ref.name)
        return await super().get(ref)

    async def refresh(self, name: str) -> None:
        """Another node changed the function `name` ("*": any function) in the database:
        re-read it, with its versions, aliases and settings, and tell the listeners of each
        version that is not what was held, as a change made here would (nothing, when
        nothing is). The settings tables are small and read whole.

        A write here that commits while this reads (an alias, a setting: those do not mark
        the function busy) may be undone in memory by the older read: then it reads again."""
        for _ in range(_REREADS):
            written = self._written
            await self._refresh(name)
            if self._written == written:
                return
        log.warning("function %s kept changing here while it was re-read", name)

    async def _refresh(self, name: str) -> None:
        if name == "*":
            configs = await self._run(self._metadata.all_versions)
            names = {c.name for c in configs} | set(self._latest)
        else:
            configs = await self._run(self._metadata.list_versions, name)
            names = {name}
        # A write here holds what it read until it commits (or fails): re-read those after it.
        busy = names & self._busy
        self._stale |= busy
        names -= busy
        configs = [c for c in configs if c.name in names]
        aliases = await self._run(self._metadata.all_aliases)
        fresh: dict[str, dict[str, FunctionConfig]] = {n: {} for n in names}
        for stored in configs:
            fresh[stored.name][stored.version] = stored
        told: list[tuple[str, str | None]] = []
        gone: list[FunctionConfig] = []
        for n in sorted(names):
            held = {k[1]: c for k, c in self._versions.items() if k[0] == n}
            if n in self._latest:
                held[LATEST] = self._latest[n]
            if not fresh[n]:
                if held:
                    gone.extend(held.values())
                    self._forget_function(n)
                    told.append((n, None))
                continue
            for version in sorted(held.keys() | fresh[n].keys()):
                config = fresh[n].get(version)
                if held.get(version) == config:
                    continue
                if config is None:
                    gone.append(held[version])
                    self._versions.pop((n, version), None)
                    self.event_invoke.forget(n, version)
                    self.policies.forget(n, version)
                    self.runtime_management.forget(n, version)
                    self.scaling.forget(n, version)
                    self.capacity.forget(n, version)
                else:
                    await self._take(config)
                told.append((n, version))
            if self.aliases.replace_function(n, [a for a in aliases if a.function_name == n]):
                self.provisioned.refresh(n)
        await self._reload_settings(names)
        for n, changed in told:
            await self._tell(n, changed)
        await self._release_configs(gone)

    def _done(self, name: str) -> None:
        """A create, update or delete of `name` here is over; if another node changed the
        function meanwhile, re-read it now."""
        self._busy.discard(name)
        if name in self._stale:
            self._stale.discard(name)
            task = asyncio.get_running_loop().create_task(self._refresh_after(name))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)

    async def _refresh_after(self, name: str) -> None:
        try:
            await self.refresh(name)
        except Exception:
            log.exception("could not re-read function %s after another node's change", name)

    async def _take(self, config: FunctionConfig) -> None:
        """Hold `config` as the database has it (its merged layers built here first)."""
        if config.layers:
            async with self.code.lock:
                try:
                    await self._run(self.layers.merges.build, config.layers)
                except (OSError, UnsafePackageError) as e:
                    log.error("could not merge the layers of %s: %s", config.name, e)
                self.code.track_opt(config)
        if config.version == LATEST:
            self._latest[config.name] = config
        else:
            self._versions[(config.name, config.version)] = config

    def _forget_function(self, name: str) -> None:
        """Drop a deleted function from memory (the store deleted its rows with it)."""
        self._latest.pop(name, None)
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
        self.aliases.forget_function(name)
        self.concurrency.forget(name)
        self.provisioned.forget_function(name)
        self.event_invoke.forget_function(name)
        self.urls.forget_function(name)
        self.policies.forget_function(name)
        self.runtime_management.forget(name, None)
        self.recursion.forget_function(name)
        self.scaling.forget(name, None)
        self.capacity.forget(name, None)
        self.signing.forget_function(name)

    async def _reload_settings(self, names: set[str]) -> None:
        """Re-read the settings of functions (those whose loads only add are emptied for
        `names` first, so that a setting removed elsewhere goes here too)."""
        for n in names:
            self.provisioned.forget_function(n)
            self.urls.forget_function(n)
            self.capacity.forget(n, None)
        await self._load_settings()

    async def _load_settings(self) -> None:
        """Read every function's settings (each kept by a service of its own) from the store."""
        await self.concurrency.load()
        await self.provisioned.load()
        await self.event_invoke.load()
        await self.urls.load()
        await self.policies.load()
        await self.runtime_management.load()
        await self.recursion.load()
        await self.capacity.load()
        await self.scaling.load()
        await self.signing.load()

    # -- internals -----------------------------------------------------------------

    def _check_dead_letter(self, name: str, fields: dict[str, Any]) -> None:
        """A DeadLetterConfig given: its target must be one Lamina can send to; an empty one
        removes the dead-letter queue (`None` in `fields`)."""
        if "dead_letter_target" in fields:
            target = fields["dead_letter_target"] or None
            if target is not None:
                self.event_invoke.check_dead_letter(name, target)
            fields["dead_letter_target"] = target

    def _refuse_unsupported(self, req: FunctionInput) -> None:
        if req.unsupported:
            raise InvalidParameterValueError(
                f"Lamina does not support {', '.join(sorted(req.unsupported))} yet."
            )

    def _conflict(self, name: str) -> ResourceConflictError:
        return ResourceConflictError(
            "The operation cannot be performed at this time. An update is in progress for "
            f"resource: {self.arn(name)}"
        )

    def _begin_update(self, name: str, revision_id: Any, *, settled: bool = True) -> FunctionConfig:
        current = self._latest.get(name)
        if current is None:
            raise self._not_found(name)
        if name in self._busy or (
            settled and current.last_update_status is UpdateStatus.IN_PROGRESS
        ):
            raise self._conflict(name)
        if settled and current.state is FunctionState.PENDING:
            # As Lambda: nothing but reads while the function is being created.
            raise ResourceConflictError(
                "The operation cannot be performed at this time. The function is currently in "
                "the following state: Pending"
            )
        if revision_id is not None and revision_id != current.revision_id:
            raise v.stale_revision()
        self._busy.add(name)
        return current

    async def _commit(self, current: FunctionConfig, new: FunctionConfig) -> None:
        ok = await self._run(
            partial(self._metadata.replace_version, new, expect_revision=current.revision_id)
        )
        if not ok:
            raise await self._lost_race(new.name)
        self._latest[new.name] = new
        await self._notify(new.name, LATEST)

    async def _lost_race(self, name: str) -> UserError:
        """(during a write of `name`) The function is not as it was read here: another node
        changed or deleted it. It is re-read once this write is over; the error says which."""
        self._stale.add(name)
        if await self._run(self._metadata.get_version, name, LATEST) is None:
            return self._not_found(name)
        return v.stale_revision()

    async def notify(self, name: str, version: str | None) -> None:
        """Tell the listeners that what a version runs changed (see `subscribe`), and the
        other nodes that the function changed."""
        await self._notify(name, version)

    async def changed(self, name: str) -> None:
        """Tell the other nodes that the function `name` changed in the database (its
        configuration, versions, aliases or settings): every write calls this once committed."""
        self._written += 1
        await changes.tell(self.feed, "function", name)

    async def _notify(self, name: str, version: str | None) -> None:
        # Listeners first: what they write in turn (a deleted function's mappings) reaches
        # the other nodes before the function's change, so theirs find nothing left to do.
        await self._tell(name, version)
        await self.changed(name)

    async def _tell(self, name: str, version: str | None) -> None:
        for listener in self._listeners:
            try:
                await listener(name, version)
            except Exception:
                log.exception("change listener failed for %s", name)

    # -- layers --------------------------------------------------------------------

    async def _take_layers(
        self, arns: Sequence[str], attached: tuple[FunctionLayer, ...]
    ) -> tuple[FunctionLayer, ...]:
        return await self._run(self.layers.resolve, arns, attached)

    def _check_layer_signatures(
        self, name: str, signing: CodeSigningConfig, layers: tuple[FunctionLayer, ...]
    ) -> None:
        """(worker) A function with a code signing configuration takes only layers whose
        packages pass its checks too, as Lambda requires."""
        for layer in layers:
            try:
                data = self._code.zip_path(layer.code_sha256).read_bytes()
            except OSError as e:
                raise ServiceError(f"Lamina could not read the layer {layer.arn}: {e}") from None
            self.signing.check(name, signing, data)
