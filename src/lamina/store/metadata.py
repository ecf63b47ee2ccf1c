"""The metadata database (SQLAlchemy 2: SQLite by default, PostgreSQL for a cluster); its
tables are in `schema`, its schema changes in `migrations`.

Rows never leave this module: callers get and give domain models. Every method is blocking;
`control/` runs them on its own single worker thread, which also serialises SQLite writers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from lamina.images import ImageConfig
from lamina.models import (
    LATEST,
    Alias,
    DurableConfig,
    EventInvokeConfig,
    Function,
    FunctionConfig,
    FunctionImage,
    FunctionLayer,
    FunctionState,
    ImageOverrides,
    LayerVersion,
    LogFormat,
    LoggingConfig,
    UpdateStatus,
    VpcConfig,
)
from lamina.store import environment
from lamina.store.engine import open_database
from lamina.store.schema import (
    aliases,
    event_invoke_configs,
    function_layers,
    function_versions,
    functions,
    layer_versions,
    layers,
    provisioned,
)
from lamina.store.sealed import Sealer

#: `delete(conn, function_name, qualifier)`: rows of another store module that belong to a
#: function (qualifier None) or one of its aliases or versions, deleted in the same
#: transaction as it
Dependent = Callable[[Connection, str, str | None], None]
#: deletes another module's rows of a layer version (name, version) in the deleting transaction
LayerDependent = Callable[[Connection, str, int], None]

_CONFIG_COLUMNS = [c.name for c in function_versions.columns if c.name != "function_name"]
_Layers = dict[tuple[str, str], tuple[FunctionLayer, ...]]


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


def _to_config(row: Any, layer_refs: _Layers, sealer: Sealer) -> FunctionConfig:
    m = row._mapping
    modified = _utc(m["last_modified"])
    return FunctionConfig(
        name=m["function_name"],
        version=m["version"],
        runtime=m["runtime"],
        handler=m["handler"],
        role=m["role"],
        description=m["description"],
        timeout=m["timeout"],
        memory_size=m["memory_size"],
        ephemeral_storage=m["ephemeral_storage"],
        environment=environment.unseal(sealer, m["function_name"], m["version"], m["environment"]),
        architectures=tuple(m["architectures"]),
        package_type=m["package_type"],
        code_sha256=m["code_sha256"],
        code_size=m["code_size"],
        revision_id=m["revision_id"],
        last_modified=modified,
        state=FunctionState(m["state"]),
        state_reason=m["state_reason"],
        state_reason_code=m["state_reason_code"],
        last_update_status=UpdateStatus(m["last_update_status"]),
        last_update_status_reason=m["last_update_status_reason"],
        last_update_status_reason_code=m["last_update_status_reason_code"],
        layers=layer_refs.get((m["function_name"], m["version"]), ()),
        dead_letter_target=m["dead_letter_target"],
        logging=_to_logging(m["logging_config"]),
        kms_key_arn=m["kms_key_arn"],
        vpc=_to_vpc(m["vpc_config"]),
        signed_by=(m["signed_by"][0], m["signed_by"][1]) if m["signed_by"] else None,
        tracing_mode=m["tracing_mode"] or "PassThrough",
        environment_given=bool(m["environment_given"]),
        durable=_to_durable(m["durable_config"]),
        image=_to_image(m["image"]),
        previous_image=_to_image((m["image"] or {}).get("previous")),
        snap_start=m["snap_start"] or "None",
    )


def _to_image(value: dict[str, Any] | None) -> FunctionImage | None:
    if not value:
        return None
    c = value.get("config") or {}
    config = ImageConfig(
        entrypoint=tuple(c.get("entrypoint", ())),
        cmd=tuple(c.get("cmd", ())),
        env=dict(c.get("env", {})),
        working_dir=c.get("working_dir", ""),
        user=c.get("user", ""),
        architecture=c.get("architecture", "x86_64"),
    )
    o = value.get("overrides")
    overrides = None
    if o is not None:
        overrides = ImageOverrides(
            entry_point=tuple(o["entry_point"]) if o.get("entry_point") is not None else None,
            command=tuple(o["command"]) if o.get("command") is not None else None,
            working_directory=o.get("working_directory"),
        )
    return FunctionImage(
        uri=value["uri"],
        resolved_uri=value["resolved_uri"],
        digest=value["digest"],
        config=config,
        overrides=overrides,
    )


def _image_values(
    image: FunctionImage | None, previous: FunctionImage | None = None
) -> dict[str, Any] | None:
    if image is None:
        return None
    c = image.config
    values: dict[str, Any] = {
        "uri": image.uri,
        "resolved_uri": image.resolved_uri,
        "digest": image.digest,
        "config": {
            "entrypoint": list(c.entrypoint),
            "cmd": list(c.cmd),
            "env": dict(c.env),
            "working_dir": c.working_dir,
            "user": c.user,
            "architecture": c.architecture,
        },
        "overrides": None,
    }
    o = image.overrides
    if o is not None:
        values["overrides"] = {
            "entry_point": list(o.entry_point) if o.entry_point is not None else None,
            "command": list(o.command) if o.command is not None else None,
            "working_directory": o.working_directory,
        }
    if previous is not None:
        values["previous"] = _image_values(previous)
    return values


def _to_durable(value: dict[str, Any] | None) -> DurableConfig | None:
    if not value:
        return None
    return DurableConfig(value["timeout"], value["retention"], value.get("kms"))


def _durable_values(config: DurableConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {
        "timeout": config.execution_timeout,
        "retention": config.retention_days,
        "kms": config.kms_key_arn,
    }


def _to_logging(value: dict[str, Any] | None) -> LoggingConfig:
    if not value:
        return LoggingConfig()
    return LoggingConfig(
        log_format=LogFormat(value.get("format", LogFormat.TEXT.value)),
        application_log_level=value.get("application_level"),
        system_log_level=value.get("system_level"),
        log_group=value.get("group"),
    )


def _to_vpc(value: dict[str, Any] | None) -> VpcConfig | None:
    if value is None:
        return None
    return VpcConfig(
        subnet_ids=tuple(value.get("subnets", ())),
        security_group_ids=tuple(value.get("security_groups", ())),
        vpc_id=value.get("vpc", ""),
        ipv6_allowed_for_dual_stack=bool(value.get("ipv6", False)),
    )


def _vpc_values(config: VpcConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {
        "subnets": list(config.subnet_ids),
        "security_groups": list(config.security_group_ids),
        "vpc": config.vpc_id,
        "ipv6": config.ipv6_allowed_for_dual_stack,
    }


def _logging_values(config: LoggingConfig) -> dict[str, Any] | None:
    if config == LoggingConfig():
        return None
    values = {
        "format": config.log_format.value,
        "application_level": config.application_log_level,
        "system_level": config.system_log_level,
        "group": config.log_group,
    }
    return {k: v for k, v in values.items() if v is not None}


def _to_layer_version(row: Any) -> LayerVersion:
    m = row._mapping
    return LayerVersion(
        name=m["layer_name"],
        version=m["version"],
        code_sha256=m["code_sha256"],
        code_size=m["code_size"],
        created=_utc(m["created"]),
        description=m["description"],
        compatible_runtimes=tuple(m["compatible_runtimes"]),
        compatible_architectures=tuple(m["compatible_architectures"]),
        license_info=m["license_info"],
    )


def _layer_rows(config: FunctionConfig) -> list[dict[str, Any]]:
    return [
        {
            "function_name": config.name,
            "version": config.version,
            "position": i,
            "arn": layer.arn,
            "code_sha256": layer.code_sha256,
            "code_size": layer.code_size,
        }
        for i, layer in enumerate(config.layers)
    ]


def _load_layers(conn: Connection, names: list[str] | None = None) -> _Layers:
    """The layers of every function version (of the functions `names`, if given)."""
    query = select(function_layers).order_by(
        function_layers.c.function_name, function_layers.c.version, function_layers.c.position
    )
    if names is not None:
        if not names:
            return {}
        query = query.where(function_layers.c.function_name.in_(names))
    found: dict[tuple[str, str], list[FunctionLayer]] = {}
    for row in conn.execute(query):
        m = row._mapping
        found.setdefault((m["function_name"], m["version"]), []).append(
            FunctionLayer(arn=m["arn"], code_sha256=m["code_sha256"], code_size=m["code_size"])
        )
    return {key: tuple(refs) for key, refs in found.items()}


def _alias_values(alias: Alias) -> dict[str, Any]:
    return {
        "function_name": alias.function_name,
        "name": alias.name,
        "function_version": alias.function_version,
        "description": alias.description,
        "routing": dict(alias.routing),
        "revision_id": alias.revision_id,
    }


def _config_values(config: FunctionConfig, sealer: Sealer) -> dict[str, Any]:
    values = {
        name: getattr(config, name)
        for name in _CONFIG_COLUMNS
        if name not in ("logging_config", "vpc_config", "durable_config", "image")
    }
    values["environment"] = environment.seal(
        sealer, config.name, config.version, config.environment
    )
    values["logging_config"] = _logging_values(config.logging)
    values["vpc_config"] = _vpc_values(config.vpc)
    values["durable_config"] = _durable_values(config.durable)
    values["image"] = _image_values(config.image, config.previous_image)
    values["architectures"] = list(config.architectures)
    values["signed_by"] = list(config.signed_by) if config.signed_by else None
    values["snap_start"] = None if config.snap_start == "None" else config.snap_start
    values["state"] = config.state.value
    values["last_update_status"] = config.last_update_status.value
    values["function_name"] = config.name
    return values


class MetadataStore:
    """Functions, their versions and layers, in a SQL database. Versions' environment
    variables are sealed with `sealer` (see `store.environment`)."""

    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        """The store on `engine`, whose schema is at head (`store.engine.open_database`)."""
        self._engine = engine
        self._sealer = sealer
        self._dependents: list[Dependent] = []
        self._layer_dependents: list[LayerDependent] = []
        # At start rather than on each row's next write: a data directory stops holding
        # values in clear as soon as this version runs, not when each function next changes.
        environment.seal_plain_rows(self._engine, sealer)

    @classmethod
    def sqlite(cls, path: Path, sealer: Sealer | None = None) -> MetadataStore:
        """The store in the SQLite file `path` (its schema brought to head); `sealer`
        defaults to the key of the directory that holds it (the data directory)."""
        sealer = sealer or Sealer.open(path.parent)  # (which makes the directory)
        return cls(open_database(f"sqlite:///{path}", cluster=False), sealer)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    @property
    def engine(self) -> Engine:
        """The database, for store modules that keep their own tables in it."""
        return self._engine

    def add_dependent(self, delete: Dependent) -> None:
        """Have `delete` remove another module's rows of a function or alias being deleted,
        in the deleting transaction."""
        self._dependents.append(delete)

    def add_layer_dependent(self, delete: LayerDependent) -> None:
        """Have `delete` remove another module's rows of a layer version being deleted, in the
        deleting transaction."""
        self._layer_dependents.append(delete)

    def create_function(self, config: FunctionConfig, tags: dict[str, str]) -> bool:
        """Insert a new function with its `$LATEST`; False if the name is taken (also by
        another node of a cluster at the same moment: the key refuses the second)."""
        try:
            with self._tx() as conn:
                if conn.execute(
                    select(functions.c.name).where(functions.c.name == config.name)
                ).first():
                    return False
                conn.execute(
                    insert(functions).values(
                        name=config.name, tags=tags, created_at=datetime.now(UTC)
                    )
                )
                conn.execute(
                    insert(function_versions).values(**_config_values(config, self._sealer))
                )
                if config.layers:
                    conn.execute(insert(function_layers), _layer_rows(config))
                return True
        except IntegrityError:
            return False

    def get_function(self, name: str) -> Function | None:
        with self._tx() as conn:
            tags = conn.execute(select(functions.c.tags).where(functions.c.name == name)).first()
            if tags is None:
                return None
            row = conn.execute(
                select(function_versions).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == "$LATEST",
                )
            ).one()
            return Function(
                latest=_to_config(row, _load_layers(conn, [name]), self._sealer), tags=dict(tags[0])
            )

    def function_tags(self, name: str) -> dict[str, str] | None:
        """A function's tags; None if there is no such function."""
        with self._tx() as conn:
            row = conn.execute(select(functions.c.tags).where(functions.c.name == name)).first()
            return dict(row[0]) if row is not None else None

    def set_function_tags(self, name: str, tags: dict[str, str]) -> bool:
        """Replace a function's tags; False if there is no such function."""
        with self._tx() as conn:
            done = conn.execute(update(functions).where(functions.c.name == name).values(tags=tags))
            return done.rowcount == 1

    def get_version(self, name: str, version: str) -> FunctionConfig | None:
        with self._tx() as conn:
            row = conn.execute(
                select(function_versions).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == version,
                )
            ).first()
            return _to_config(row, _load_layers(conn, [name]), self._sealer) if row else None

    def publish_version(
        self, config: FunctionConfig, *, expect_revision: str
    ) -> FunctionConfig | None:
        """Store `config` (a copy of `$LATEST` with a new revision, description and time) as
        the function's next version, numbered here. None if `$LATEST` changed meanwhile."""
        with self._tx() as conn:
            # The function's row first, locked (PostgreSQL): two nodes publishing at once
            # take numbers one after the other, and the second sees the first's revision.
            number = conn.execute(
                select(functions.c.next_version)
                .where(functions.c.name == config.name)
                .with_for_update()
            ).scalar_one_or_none()
            latest = conn.execute(
                select(function_versions.c.revision_id).where(
                    function_versions.c.function_name == config.name,
                    function_versions.c.version == "$LATEST",
                )
            ).first()
            if number is None or latest is None or latest[0] != expect_revision:
                return None
            published = replace(config, version=str(number))
            conn.execute(
                insert(function_versions).values(**_config_values(published, self._sealer))
            )
            if published.layers:
                conn.execute(insert(function_layers), _layer_rows(published))
            conn.execute(
                update(functions)
                .where(functions.c.name == config.name)
                .values(next_version=number + 1)
            )
            return published

    def list_versions(self, name: str) -> list[FunctionConfig]:
        """Every version of a function, `$LATEST` included (unordered)."""
        with self._tx() as conn:
            rows = list(
                conn.execute(
                    select(function_versions).where(function_versions.c.function_name == name)
                )
            )
            refs = _load_layers(conn, [name])
            return [_to_config(r, refs, self._sealer) for r in rows]

    def delete_version(self, name: str, version: str) -> bool:
        """Delete one published version (its layer references, its asynchronous invocation
        settings and its dependents' rows go with it)."""
        with self._tx() as conn:
            _delete_event_invoke(conn, name, version)
            for dependent in self._dependents:
                dependent(conn, name, version)
            deleted = conn.execute(
                delete(function_versions).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == version,
                )
            ).rowcount
            return bool(deleted)

    def set_reserved_concurrency(self, name: str, limit: int | None) -> bool:
        """False if there is no such function."""
        with self._tx() as conn:
            return bool(
                conn.execute(
                    update(functions)
                    .where(functions.c.name == name)
                    .values(reserved_concurrency=limit)
                ).rowcount
            )

    def reserved_concurrency(self) -> dict[str, int]:
        """Every function's reserved concurrency, where set."""
        with self._tx() as conn:
            rows = conn.execute(
                select(functions.c.name, functions.c.reserved_concurrency).where(
                    functions.c.reserved_concurrency.is_not(None)
                )
            )
            return {name: int(limit) for name, limit in rows}

    def put_provisioned(
        self, function_name: str, qualifier: str, requested: int, at: datetime
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                delete(provisioned).where(
                    provisioned.c.function_name == function_name,
                    provisioned.c.qualifier == qualifier,
                )
            )
            conn.execute(
                insert(provisioned).values(
                    function_name=function_name,
                    qualifier=qualifier,
                    requested=requested,
                    last_modified=at,
                )
            )

    def delete_provisioned(self, function_name: str, qualifier: str) -> bool:
        with self._tx() as conn:
            return bool(
                conn.execute(
                    delete(provisioned).where(
                        provisioned.c.function_name == function_name,
                        provisioned.c.qualifier == qualifier,
                    )
                ).rowcount
            )

    def all_provisioned(self) -> list[tuple[str, str, int, datetime]]:
        with self._tx() as conn:
            return [
                (r.function_name, r.qualifier, int(r.requested), _utc(r.last_modified))
                for r in conn.execute(select(provisioned))
            ]

    def put_event_invoke(self, config: EventInvokeConfig) -> bool:
        """Store (replace) a qualifier's asynchronous invocation settings; False if the
        function, version or alias is gone (checked in the same transaction, so a row is never
        written for something just deleted)."""
        name, qualifier = config.function_name, config.qualifier
        with self._tx() as conn:
            if qualifier == LATEST:
                exists = select(functions.c.name).where(functions.c.name == name)
            elif qualifier.isdigit():
                exists = select(function_versions.c.version).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == qualifier,
                )
            else:
                exists = select(aliases.c.name).where(
                    aliases.c.function_name == name, aliases.c.name == qualifier
                )
            if conn.execute(exists).first() is None:
                return False
            _delete_event_invoke(conn, name, qualifier)
            conn.execute(
                insert(event_invoke_configs).values(
                    function_name=name,
                    qualifier=qualifier,
                    maximum_retry_attempts=config.maximum_retry_attempts,
                    maximum_event_age_s=config.maximum_event_age_s,
                    on_success=config.on_success,
                    on_failure=config.on_failure,
                    last_modified=config.last_modified,
                )
            )
            return True

    def delete_event_invoke(self, function_name: str, qualifier: str) -> bool:
        with self._tx() as conn:
            return _delete_event_invoke(conn, function_name, qualifier)

    def all_event_invoke(self) -> list[EventInvokeConfig]:
        with self._tx() as conn:
            return [
                EventInvokeConfig(
                    function_name=m["function_name"],
                    qualifier=m["qualifier"],
                    last_modified=_utc(m["last_modified"]),
                    maximum_retry_attempts=m["maximum_retry_attempts"],
                    maximum_event_age_s=m["maximum_event_age_s"],
                    on_success=m["on_success"],
                    on_failure=m["on_failure"],
                )
                for m in (r._mapping for r in conn.execute(select(event_invoke_configs)))
            ]

    def create_alias(self, alias: Alias) -> bool:
        """False if the function has an alias of that name already."""
        try:
            with self._tx() as conn:
                if conn.execute(
                    select(aliases.c.name).where(
                        aliases.c.function_name == alias.function_name,
                        aliases.c.name == alias.name,
                    )
                ).first():
                    return False
                conn.execute(insert(aliases).values(**_alias_values(alias)))
                return True
        except IntegrityError:  # made by another node meanwhile
            return False

    def replace_alias(self, alias: Alias, *, expect_revision: str) -> bool:
        with self._tx() as conn:
            changed = conn.execute(
                update(aliases)
                .where(
                    aliases.c.function_name == alias.function_name,
                    aliases.c.name == alias.name,
                    aliases.c.revision_id == expect_revision,
                )
                .values(**_alias_values(alias))
            ).rowcount
            return bool(changed)

    def delete_alias(self, function_name: str, name: str) -> bool:
        """Delete an alias and its asynchronous invocation settings."""
        with self._tx() as conn:
            _delete_event_invoke(conn, function_name, name)
            for dependent in self._dependents:
                dependent(conn, function_name, name)
            return bool(
                conn.execute(
                    delete(aliases).where(
                        aliases.c.function_name == function_name, aliases.c.name == name
                    )
                ).rowcount
            )

    def all_aliases(self) -> list[Alias]:
        with self._tx() as conn:
            return [
                Alias(
                    function_name=m["function_name"],
                    name=m["name"],
                    function_version=m["function_version"],
                    description=m["description"],
                    routing={str(k): float(w) for k, w in dict(m["routing"]).items()},
                    revision_id=m["revision_id"],
                )
                for m in (r._mapping for r in conn.execute(select(aliases)))
            ]

    def list_latest(self, after: str | None, limit: int) -> list[FunctionConfig]:
        """`$LATEST` of each function, by name, starting after `after`."""
        query = select(function_versions).where(function_versions.c.version == "$LATEST")
        if after is not None:
            query = query.where(function_versions.c.function_name > after)
        query = query.order_by(function_versions.c.function_name).limit(limit)
        with self._tx() as conn:
            rows = list(conn.execute(query))
            refs = _load_layers(conn, [r._mapping["function_name"] for r in rows])
            return [_to_config(r, refs, self._sealer) for r in rows]

    def all_versions(self) -> list[FunctionConfig]:
        with self._tx() as conn:
            refs = _load_layers(conn)
            return [
                _to_config(r, refs, self._sealer) for r in conn.execute(select(function_versions))
            ]

    def replace_version(self, config: FunctionConfig, *, expect_revision: str) -> bool:
        """Overwrite a version if its revision is still `expect_revision` (optimistic lock)."""
        values = _config_values(config, self._sealer)
        with self._tx() as conn:
            result = conn.execute(
                update(function_versions)
                .where(
                    function_versions.c.function_name == config.name,
                    function_versions.c.version == config.version,
                    function_versions.c.revision_id == expect_revision,
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                delete(function_layers).where(
                    function_layers.c.function_name == config.name,
                    function_layers.c.version == config.version,
                )
            )
            if config.layers:
                conn.execute(insert(function_layers), _layer_rows(config))
            return True

    def delete_function(self, name: str) -> bool:
        with self._tx() as conn:
            # The cascade would do it; said here so that no database is relied on for it.
            for dependent in self._dependents:
                dependent(conn, name, None)
            conn.execute(
                delete(event_invoke_configs).where(event_invoke_configs.c.function_name == name)
            )
            conn.execute(delete(function_layers).where(function_layers.c.function_name == name))
            conn.execute(delete(function_versions).where(function_versions.c.function_name == name))
            return conn.execute(delete(functions).where(functions.c.name == name)).rowcount == 1

    def code_in_use(self, sha256: str) -> bool:
        """Whether a function version, a function's layer or a layer version uses this code."""
        with self._tx() as conn:
            for column in (
                function_versions.c.code_sha256,
                function_layers.c.code_sha256,
                layer_versions.c.code_sha256,
            ):
                if conn.execute(select(func.count()).where(column == sha256)).scalar_one():
                    return True
            return False

    def referenced_code(self) -> set[str]:
        """The digest of every package something references."""
        with self._tx() as conn:
            found: set[str] = set()
            for column in (
                function_versions.c.code_sha256,
                function_layers.c.code_sha256,
                layer_versions.c.code_sha256,
            ):
                found.update(conn.execute(select(column).distinct()).scalars())
            return found

    # -- layers --------------------------------------------------------------------

    def publish_layer_version(self, draft: LayerVersion) -> LayerVersion:
        """Store a new version of a layer (created on first use) under the next number."""
        try:
            return self._publish_layer_version(draft)
        except IntegrityError:
            # Another node of a cluster made the layer's first version meanwhile: its row
            # exists now, and the second try takes the next number under its lock.
            return self._publish_layer_version(draft)

    def _publish_layer_version(self, draft: LayerVersion) -> LayerVersion:
        with self._tx() as conn:
            current = conn.execute(
                select(layers.c.next_version).where(layers.c.name == draft.name).with_for_update()
            ).scalar_one_or_none()
            if current is None:
                number = 1
                conn.execute(insert(layers).values(name=draft.name, next_version=2))
            else:
                number = current
                conn.execute(
                    update(layers)
                    .where(layers.c.name == draft.name)
                    .values(next_version=number + 1)
                )
            conn.execute(
                insert(layer_versions).values(
                    layer_name=draft.name,
                    version=number,
                    description=draft.description,
                    compatible_runtimes=list(draft.compatible_runtimes),
                    compatible_architectures=list(draft.compatible_architectures),
                    license_info=draft.license_info,
                    code_sha256=draft.code_sha256,
                    code_size=draft.code_size,
                    created=draft.created,
                )
            )
        return replace(draft, version=number)

    def get_layer_version(self, name: str, version: int) -> LayerVersion | None:
        with self._tx() as conn:
            row = conn.execute(
                select(layer_versions).where(
                    layer_versions.c.layer_name == name, layer_versions.c.version == version
                )
            ).first()
            return _to_layer_version(row) if row else None

    def layer_versions(self, name: str) -> list[LayerVersion]:
        """Every version of one layer, newest first."""
        with self._tx() as conn:
            rows = conn.execute(
                select(layer_versions)
                .where(layer_versions.c.layer_name == name)
                .order_by(layer_versions.c.version.desc())
            )
            return [_to_layer_version(r) for r in rows]

    def all_layer_versions(self, after: str | None = None) -> list[LayerVersion]:
        """Every version of every layer named after `after`, by name, newest version first."""
        query = select(layer_versions)
        if after is not None:
            query = query.where(layer_versions.c.layer_name > after)
        query = query.order_by(layer_versions.c.layer_name, layer_versions.c.version.desc())
        with self._tx() as conn:
            return [_to_layer_version(r) for r in conn.execute(query)]

    def delete_layer_version(self, name: str, version: int) -> LayerVersion | None:
        """Forget one layer version; returns what was deleted (None if it did not exist)."""
        with self._tx() as conn:
            row = conn.execute(
                select(layer_versions).where(
                    layer_versions.c.layer_name == name, layer_versions.c.version == version
                )
            ).first()
            if row is None:
                return None
            conn.execute(
                delete(layer_versions).where(
                    layer_versions.c.layer_name == name, layer_versions.c.version == version
                )
            )
            for dependent in self._layer_dependents:
                dependent(conn, name, version)
            return _to_layer_version(row)

    def layer_code_exists(self, sha256: str) -> bool:
        """Whether a layer version (not yet deleted) has this code."""
        with self._tx() as conn:
            count = conn.execute(
                select(func.count()).where(layer_versions.c.code_sha256 == sha256)
            ).scalar_one()
            return bool(count)


def _delete_event_invoke(conn: Connection, function_name: str, qualifier: str) -> bool:
    return bool(
        conn.execute(
            delete(event_invoke_configs).where(
                event_invoke_configs.c.function_name == function_name,
                event_invoke_configs.c.qualifier == qualifier,
            )
        ).rowcount
    )
