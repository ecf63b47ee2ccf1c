"""The metadata database's tables (SQLAlchemy Core): functions, their versions and layers,
aliases, provisioned concurrency, event-invoke configs and layer versions.

Only `store/` modules import these; everyone else gets domain models from `MetadataStore`.
Other store modules (function URLs, rules) keep tables of their own in the same database.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

functions = Table(
    "functions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tags", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The number the next published version gets: never reused, even after deletion.
    Column("next_version", Integer, nullable=False, server_default="1"),
    # PutFunctionConcurrency's ReservedConcurrentExecutions (None: not reserved).
    Column("reserved_concurrency", Integer, nullable=True),
)

# One row per version of a function; `$LATEST` is the mutable one.
function_versions = Table(
    "function_versions",
    metadata,
    Column(
        "function_name",
        String(64),
        ForeignKey("functions.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", String(16), primary_key=True),
    Column("runtime", String(32), nullable=False),
    Column("handler", String(128), nullable=False),
    Column("role", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("timeout", Integer, nullable=False),
    Column("memory_size", Integer, nullable=False),
    Column("ephemeral_storage", Integer, nullable=False),
    # Environment.Variables sealed (`store.sealed`): a JSON string of base64 text. A JSON
    # object is a row stored in clear before sealing came; it is sealed at start.
    Column("environment", JSON, nullable=False),
    Column("architectures", JSON, nullable=False),
    Column("package_type", String(8), nullable=False),
    Column("code_sha256", String(64), nullable=False, index=True),
    Column("code_size", Integer, nullable=False),
    Column("revision_id", String(36), nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_reason", Text),
    Column("state_reason_code", String(64)),
    Column("last_update_status", String(16), nullable=False),
    Column("last_update_status_reason", Text),
    Column("last_update_status_reason_code", String(64)),
    # DeadLetterConfig.TargetArn (None: no dead-letter queue).
    Column("dead_letter_target", Text),
    # LoggingConfig as a dict of its set fields (None: Lambda's defaults).
    Column("logging_config", JSON),
    # KMSKeyArn as given: recorded only (the data directory's key seals the environment).
    Column("kms_key_arn", Text),
    # VpcConfig (None: the function was never given one), see `_vpc_values`.
    Column("vpc_config", JSON),
    # [SigningProfileVersionArn, SigningJobArn] of a package that passed code signing's checks
    Column("signed_by", JSON),
    # TracingConfig.Mode (None: PassThrough).
    Column("tracing_mode", String(16)),
    # Whether an Environment was given (None: only if it has variables, as rows before it).
    Column("environment_given", Boolean),
    # DurableConfig as {"timeout", "retention", "kms"} (None: not a durable function)
    Column("durable_config", JSON),
    # A PackageType Image function's image: {"uri", "resolved_uri", "digest", "config",
    # "overrides", "previous"} (None: a Zip function), see `store.metadata._image_values`.
    Column("image", JSON),
    # SnapStart.ApplyOn "PublishedVersions" (None: "None", SnapStart off)
    Column("snap_start", String(32)),
)

# The layers of each function version, in merge order. The layer's digest and size are copied
# here: a function keeps its layers' content after the layer versions are deleted.
function_layers = Table(
    "function_layers",
    metadata,
    Column("function_name", String(64), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("arn", Text, nullable=False),
    Column("code_sha256", String(64), nullable=False, index=True),
    Column("code_size", Integer, nullable=False),
    ForeignKeyConstraint(
        ["function_name", "version"],
        ["function_versions.function_name", "function_versions.version"],
        ondelete="CASCADE",
    ),
)

# Aliases of function versions; `routing` maps an additional version to its weight.
aliases = Table(
    "aliases",
    metadata,
    Column(
        "function_name",
        String(64),
        ForeignKey("functions.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column("function_version", String(16), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("routing", JSON, nullable=False),
    Column("revision_id", String(36), nullable=False),
)

# Provisioned concurrency, per function and qualifier (a version or an alias).
provisioned = Table(
    "provisioned_concurrency",
    metadata,
    Column(
        "function_name",
        String(64),
        ForeignKey("functions.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("qualifier", String(128), primary_key=True),
    Column("requested", Integer, nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
)

# Asynchronous invocation settings (PutFunctionEventInvokeConfig), per function and qualifier
# (`$LATEST`, a version or an alias); None is "unset" (Lambda's default applies). A version's or
# an alias's row is deleted with it; a function's go with the function (cascade).
event_invoke_configs = Table(
    "event_invoke_configs",
    metadata,
    Column(
        "function_name",
        String(64),
        ForeignKey("functions.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("qualifier", String(128), primary_key=True),
    Column("maximum_retry_attempts", Integer, nullable=True),
    Column("maximum_event_age_s", Integer, nullable=True),
    Column("on_success", Text, nullable=True),
    Column("on_failure", Text, nullable=True),
    Column("last_modified", DateTime(timezone=True), nullable=False),
)

# One row per layer name ever published: it outlives its versions so that version numbers are
# never reused, even after every version was deleted.
layers = Table(
    "layers",
    metadata,
    Column("name", String(140), primary_key=True),
    Column("next_version", Integer, nullable=False),
)

layer_versions = Table(
    "layer_versions",
    metadata,
    Column(
        "layer_name",
        String(140),
        ForeignKey("layers.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("compatible_runtimes", JSON, nullable=False),
    Column("compatible_architectures", JSON, nullable=False),
    Column("license_info", Text),
    Column("code_sha256", String(64), nullable=False, index=True),
    Column("code_size", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)
