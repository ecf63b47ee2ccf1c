"""Domain models shared by the layers. No AWS wire spelling here: `api/` translates."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from lamina import limits
from lamina.images import ImageConfig
from lamina.response_stream import ResponseStream

LATEST = "$LATEST"


class FunctionState(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    FAILED = "Failed"


class UpdateStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"


@dataclass(frozen=True)
class FunctionLayer:
    """One layer version a function uses, as it was when the function took it: the content
    stays with the function even if the layer version is deleted later (as on Lambda)."""

    arn: str  # the layer version ARN
    code_sha256: str  # hex digest of the layer's zip
    code_size: int


@dataclass(frozen=True)
class Alias:
    """A name for a function version, optionally sending a share of invocations to a second
    version (`routing`: version -> weight, at most one entry, as Lambda allows)."""

    function_name: str
    name: str
    function_version: str
    revision_id: str
    description: str = ""
    routing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerVersion:
    """One published version of a layer. Versions are immutable."""

    name: str
    version: int
    code_sha256: str  # hex digest of the zip
    code_size: int
    created: datetime
    description: str = ""
    compatible_runtimes: tuple[str, ...] = ()
    compatible_architectures: tuple[str, ...] = ()
    license_info: str | None = None

    @property
    def code_sha256_b64(self) -> str:
        """CodeSha256 as Lambda spells it: base64 of the raw SHA-256 digest."""
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode()


class LogFormat(StrEnum):
    TEXT = "Text"
    JSON = "JSON"


#: application log levels, most detailed first (Lambda's ApplicationLogLevel)
APPLICATION_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
#: system (platform) log levels, most detailed first (Lambda's SystemLogLevel)
SYSTEM_LOG_LEVELS = ("DEBUG", "INFO", "WARN")
#: the level Lambda gives both in JSON format when the caller names none
DEFAULT_LOG_LEVEL = "INFO"


@dataclass(frozen=True)
class LoggingConfig:
    """Where and how a function's logs go (Lambda's LoggingConfig). The levels are set only
    in JSON format, where Lambda filters by them; `log_group` None is `/aws/lambda/NAME`."""

    log_format: LogFormat = LogFormat.TEXT
    application_log_level: str | None = None
    system_log_level: str | None = None
    log_group: str | None = None

    def group(self, function_name: str) -> str:
        return self.log_group or f"/aws/lambda/{function_name}"

    @property
    def json(self) -> bool:
        return self.log_format is LogFormat.JSON


@dataclass(frozen=True)
class DurableConfig:
    """`DurableConfig`: the function runs durable executions (see `control.durable`)."""

    #: seconds an execution may run in all, across its invocations and suspensions
    execution_timeout: int
    #: days an ended execution's state and history are kept
    retention_days: int = 14
    #: KMSKeyArn as given (recorded only)
    kms_key_arn: str | None = None


@dataclass(frozen=True)
class VpcConfig:
    """The VPC a function joins (Lambda's VpcConfig): subnets of one of the operator's VPCs
    (`networks.Vpc`), whose networks its environments may reach. No subnets and no security
    groups: a function taken out of its VPC (Lambda keeps reporting the empty lists)."""

    subnet_ids: tuple[str, ...] = ()
    #: recorded and reported only: Lamina has no security groups (inbound connections never
    #: reach an environment, and outbound to the VPC is open, as with a default group)
    security_group_ids: tuple[str, ...] = ()
    #: the VPC the subnets are in ("" with no subnets)
    vpc_id: str = ""
    #: recorded and reported only: environments have no IPv6 egress
    ipv6_allowed_for_dual_stack: bool = False


@dataclass(frozen=True)
class ImageOverrides:
    """`ImageConfig` as the caller gave it: what replaces the image's own ENTRYPOINT, CMD and
    WORKDIR (None: the image's own)."""

    entry_point: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    working_directory: str | None = None


@dataclass(frozen=True)
class FunctionImage:
    """The container image a `PackageType: Image` function runs, as resolved when its code
    was set: the URI the caller gave, the manifest digest it named then, and what the image's
    config says about running it."""

    #: `Code.ImageUri` as given
    uri: str
    #: `ResolvedImageUri`: the repository pinned to `digest`
    resolved_uri: str
    #: the manifest's digest, "sha256:<hex>"
    digest: str
    #: the image's own ENTRYPOINT, CMD, ENV, WORKDIR, USER and architecture
    config: ImageConfig = field(default_factory=ImageConfig)
    #: `ImageConfig` as given (None: never given; Lambda reports ImageConfigResponse only then)
    overrides: ImageOverrides | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        """What the environment runs: (EntryPoint or ENTRYPOINT) + (Command or CMD)."""
        o = self.overrides or ImageOverrides()
        entry = o.entry_point if o.entry_point is not None else self.config.entrypoint
        command = o.command if o.command is not None else self.config.cmd
        return (*entry, *command)

    @property
    def working_dir(self) -> str:
        """The runtime's working directory: WorkingDirectory, else WORKDIR, else `/`."""
        o = self.overrides or ImageOverrides()
        return o.working_directory or self.config.working_dir or "/"


@dataclass(frozen=True)
class FunctionConfig:
    """One version of a function: its code and configuration, as stored."""

    name: str
    version: str
    runtime: str
    handler: str
    role: str
    code_sha256: str  # hex digest of the zip
    code_size: int
    revision_id: str
    last_modified: datetime
    description: str = ""
    timeout: int = limits.TIMEOUT_DEFAULT_S
    memory_size: int = limits.MEMORY_DEFAULT_MB
    ephemeral_storage: int = limits.EPHEMERAL_DEFAULT_MB
    environment: dict[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("x86_64",)
    package_type: str = "Zip"
    state: FunctionState = FunctionState.ACTIVE
    state_reason: str | None = None
    state_reason_code: str | None = None
    last_update_status: UpdateStatus = UpdateStatus.SUCCESSFUL
    last_update_status_reason: str | None = None
    last_update_status_reason_code: str | None = None
    #: the function's layers in merge order (later layers overwrite earlier files in /opt)
    layers: tuple[FunctionLayer, ...] = ()
    #: DeadLetterConfig.TargetArn: where an asynchronous event goes after its last failure
    dead_letter_target: str | None = None
    logging: LoggingConfig = LoggingConfig()
    #: KMSKeyArn as given (recorded only: the data directory's key is what encrypts the
    #: environment at rest); None or "" when not set
    kms_key_arn: str | None = None
    #: the VPC the function joins (None: never given one; see `VpcConfig`)
    vpc: VpcConfig | None = None
    #: (SigningProfileVersionArn, SigningJobArn) of a package that passed code signing's
    #: checks (None: unsigned, or deployed without a check)
    signed_by: tuple[str, str] | None = None
    #: TracingConfig.Mode: which invocations are sampled for traces (`scheduler.traces`)
    tracing_mode: str = "PassThrough"
    #: whether the caller gave an `Environment` (Lambda reports one given with no variables
    #: as `{"Variables": {}}`, and none at all when never given)
    environment_given: bool = False
    #: DurableConfig (None: not a durable function)
    durable: DurableConfig | None = None
    #: the container image of a `PackageType: Image` function (None for Zip)
    image: FunctionImage | None = None
    #: while an UpdateFunctionCode of an image function is InProgress: the image that keeps
    #: serving invocations until the new one is ready (None otherwise)
    previous_image: FunctionImage | None = None
    #: SnapStart.ApplyOn: "PublishedVersions" (each published version is initialised once
    #: and its environments restored from that template, see `lamina.control.snapstart`)
    #: or "None"
    snap_start: str = "None"

    @property
    def snap_start_on(self) -> bool:
        """SnapStart.OptimizationStatus On: a published version of a SnapStart function
        (`$LATEST` is never snapshotted, as on Lambda)."""
        return self.snap_start == "PublishedVersions" and self.version != LATEST

    @property
    def is_image(self) -> bool:
        return self.image is not None

    @property
    def serving_image(self) -> FunctionImage | None:
        """The image environments run now: the previous one while an update is pulled."""
        return self.previous_image or self.image

    @property
    def vpc_id(self) -> str | None:
        """The VPC whose networks the function's environments reach (None: none)."""
        return self.vpc.vpc_id if self.vpc is not None and self.vpc.vpc_id else None

    @property
    def log_group(self) -> str:
        """The log group its environments write to."""
        return self.logging.group(self.name)

    @property
    def network_enabled(self) -> bool:
        """False when the function is set to have no network (LAMINA_NETWORK=none)."""
        return self.environment.get(NETWORK_VARIABLE, "default") != "none"

    @property
    def code_sha256_b64(self) -> str:
        """CodeSha256 as Lambda spells it: base64 of the raw SHA-256 digest of a zip; for an
        image, the manifest digest's hex as Lambda reports it (no base64)."""
        if self.image is not None:
            return self.code_sha256
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode()


#: Lamina's own per-function setting, an environment variable so that every Lambda tool can
#: set it: `none` gives the function no network at all but its Runtime API (where the sandbox
#: backend can enforce it: `namespace` does, `process` cannot)
NETWORK_VARIABLE = "LAMINA_NETWORK"
NETWORK_VALUES = ("default", "none")
#: Lamina's per-function debugger setting (see `lamina.scheduler.debugging`): `1` starts every
#: new environment with the language's debugger listening, `wait` also holds its init phase
#: until a debugger client attaches, `0` (or absent) is off
DEBUG_VARIABLE = "LAMINA_DEBUG"
DEBUG_VALUES = ("0", "1", "wait")


@dataclass(frozen=True)
class Function:
    """A function: its `$LATEST` configuration and what belongs to the function as a whole."""

    latest: FunctionConfig
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventInvokeConfig:
    """How asynchronous invocations of one function qualifier are retried and reported
    (PutFunctionEventInvokeConfig). `None` fields are unset and take Lambda's defaults."""

    function_name: str
    #: `$LATEST` (also for the unqualified function), a version number or an alias name
    qualifier: str
    last_modified: datetime
    maximum_retry_attempts: int | None = None
    maximum_event_age_s: int | None = None
    #: destination ARNs (DestinationConfig.OnSuccess / OnFailure .Destination)
    on_success: str | None = None
    on_failure: str | None = None

    @property
    def retry_attempts(self) -> int:
        return (
            limits.ASYNC_RETRIES_DEFAULT
            if self.maximum_retry_attempts is None
            else (self.maximum_retry_attempts)
        )

    @property
    def event_age_s(self) -> int:
        return (
            limits.ASYNC_EVENT_AGE_DEFAULT_S
            if self.maximum_event_age_s is None
            else (self.maximum_event_age_s)
        )


@dataclass(frozen=True)
class InvokeResult:
    """What an invocation returned. A function error is a result, not an exception."""

    payload: bytes
    executed_version: str
    #: None on success; "Unhandled" when the function (or its runtime) failed
    function_error: str | None = None
    #: how long the invocation ran in the environment, in milliseconds
    duration_ms: float = 0.0
    init_duration_ms: float | None = None
    #: the end of the invocation's log (at most 4 KB), when the caller asked for it
    log_tail: bytes | None = None
    #: the runtime's (or Lamina's) error type, when the function failed
    error_type: str | None = None
    #: the trace header the invocation ran with, when it was traced (its Parent names the
    #: handler's span: what a destination's invocation continues); None otherwise
    trace_header: str | None = None


@dataclass(frozen=True)
class InvokeRequest:
    """One invocation as the scheduler sees it."""

    request_id: str
    payload: bytes
    #: the ARN the caller used (qualified if the caller qualified it)
    invoked_arn: str
    #: the ClientContext JSON text (already base64-decoded), if the caller sent one
    client_context: str | None = None
    trace_id: str = ""
    #: Invoke's TenantId (the caller's tenant in a multi-tenant function), if given
    tenant_id: str | None = None
    #: the caller wants the end of the invocation's log back (LogType=Tail)
    log_tail: bool = False
    #: where a streamed response goes as the runtime writes it (InvokeWithResponseStream,
    #: RESPONSE_STREAM URLs); None: a streamed response is buffered like any other
    stream: ResponseStream | None = None
    #: the debug session whose environment runs it (`lamina invoke --debug`), if any
    debug_session: str | None = None
    #: who asked (for the invocation log): RequestResponse (Invoke), Event (an async
    #: event), ResponseStream, Http (a function URL or HTTP route), EventSource, Durable
    source: str = "RequestResponse"
    #: which attempt this is (an async event's retries are attempts 2 and 3)
    attempt: int = 1
    #: epoch seconds when an asynchronous event was accepted (its trace's Queued span)
    queued_at: float | None = None
    #: the X-Ray headers of the messages a batch carries (SQS's `AWSTraceHeader`): a traced
    #: invocation's span links to each, as Lambda links a consumer's trace to its producers'
    trace_links: tuple[str, ...] = ()


@dataclass(frozen=True)
class UrlCors:
    """A function URL's CORS settings (`Cors`); `None` members were not given."""

    allow_credentials: bool | None = None
    allow_headers: tuple[str, ...] | None = None
    allow_methods: tuple[str, ...] | None = None
    allow_origins: tuple[str, ...] | None = None
    expose_headers: tuple[str, ...] | None = None
    max_age: int | None = None


@dataclass(frozen=True)
class FunctionUrl:
    """A function URL: a dedicated HTTP endpoint for one function qualifier (`$LATEST`, which
    the unqualified function also means, or an alias)."""

    function_name: str
    qualifier: str
    #: 32 lower-case letters and digits, stable for the URL's life (the `<url-id>`)
    url_id: str
    auth_type: str
    invoke_mode: str
    created: datetime
    last_modified: datetime
    cors: UrlCors | None = None


@dataclass(frozen=True)
class Role:
    """An execution role defined in Lamina: what a function's role session may do."""

    name: str
    #: IAM path, `/` or `/a/b/`
    path: str
    arn: str
    #: identity policy documents (parsed JSON), in the order given
    policies: tuple[dict[str, Any], ...]
    created: datetime
    description: str = ""


@dataclass(frozen=True)
class Stack:
    """A stack deployed from a template (`lamina deploy --template`): what was provisioned
    for it, as the CLI reported it (see `control/stacks.py`)."""

    name: str
    template_path: str
    parameters: dict[str, Any]
    #: logical id -> {"type", "physical_ref", "attributes", "properties_digest",
    #: "properties", "status"}
    resources: dict[str, Any]
    #: output name -> value
    outputs: dict[str, Any]
    #: CloudFormation's stack status words: CREATE_COMPLETE, UPDATE_COMPLETE, ...
    status: str
    created: datetime
    updated: datetime


class RuleState(StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


@dataclass(frozen=True)
class RuleTarget:
    """Where a rule sends what matched: a Lambda function (ARN, maybe qualified), with the
    event itself, a constant `input` (JSON text) or the part of the event `input_path` picks."""

    id: str
    arn: str
    input: str | None = None
    input_path: str | None = None


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule on an event bus: a pattern, a schedule, or both."""

    name: str
    bus: str
    state: RuleState
    created_at: datetime
    #: when rate() ticks count from: the rule's creation, or its last enabling or new schedule
    anchor: datetime
    description: str = ""
    event_pattern: str | None = None
    schedule_expression: str | None = None
    role_arn: str | None = None
    #: the last scheduled tick claimed for firing (None: none yet)
    last_tick: datetime | None = None
    targets: tuple[RuleTarget, ...] = ()


@dataclass(frozen=True)
class CodeSigningConfig:
    """A code signing configuration: which signing profiles may publish a function's code,
    and whether a package that fails the checks is refused (`Enforce`) or only warned about
    (`Warn`)."""

    id: str
    arn: str
    description: str
    allowed_profiles: tuple[str, ...]
    policy: str
    last_modified: datetime
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustedSigner:
    """A signing profile version Lamina trusts: its ARN and public key (PEM). A revoked one
    stays known, so that its signatures fail the revocation check rather than look foreign."""

    profile_arn: str
    public_key_pem: str
    added: datetime
    revoked: datetime | None = None
