"""Lambda's rules for function configuration values, with Lambda's error types and wording.

Constraint violations that Lambda's API layer catches (types, ranges, patterns) are collected
and reported together as one `ValidationException` ("2 validation errors detected: ..."), as
AWS does; semantic problems are `InvalidParameterValueException`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lamina import arns, limits
from lamina.errors import (
    InvalidParameterValueError,
    LaminaError,
    PreconditionFailedError,
    ValidationError,
)
from lamina.models import (
    APPLICATION_LOG_LEVELS,
    DEBUG_VALUES,
    DEBUG_VARIABLE,
    DEFAULT_LOG_LEVEL,
    NETWORK_VALUES,
    NETWORK_VARIABLE,
    SYSTEM_LOG_LEVELS,
    DurableConfig,
    LogFormat,
    LoggingConfig,
    VpcConfig,
)
from lamina.networks import SECURITY_GROUP_ID, SUBNET_ID
from lamina.runtimes.catalog import (
    DEPRECATED_RUNTIMES,
    LAMBDA_RUNTIMES,
    RuntimeCatalog,
    implemented_family,
)

_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_HANDLER = re.compile(r"[^\s]+")
_ROLE = re.compile(r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
# KMSKeyArn (botocore's model; "" is allowed: it removes the key)
_KMS_KEY_ARN = re.compile(r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()")
_ENV_KEY = re.compile(r"[a-zA-Z]([a-zA-Z0-9_])+")
_ARCHITECTURES = ("x86_64", "arm64")

#: Keys Lambda sets itself and refuses in Environment.Variables.
RESERVED_ENV_KEYS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


class Constraints:
    """Collects constraint violations; `check()` raises them together."""

    def __init__(self) -> None:
        self._problems: list[str] = []
        self._later: list[LaminaError] = []

    def defer(self, error: LaminaError) -> None:
        """A semantic refusal (InvalidParameterValueException...) found while checking: it is
        raised by `check()` only if every model constraint held, as Lambda orders them."""
        self._later.append(error)

    def fail(self, value: object, where: str, constraint: str) -> None:
        shown = "null" if value is None else f"'{value}'"
        self._problems.append(
            f"Value {shown} at '{where}' failed to satisfy constraint: {constraint}"
        )

    def check(self) -> None:
        n = len(self._problems)
        if n:
            noun = "error" if n == 1 else "errors"
            raise ValidationError(f"{n} validation {noun} detected: " + "; ".join(self._problems))
        if self._later:
            raise self._later[0]

    # Typed checks. Each returns the value if it passed, else None (and records why).

    def integer(self, value: Any, where: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, where, "Member must be an integer")
            return None
        if value < low:
            self.fail(value, where, f"Member must have value greater than or equal to {low}")
            return None
        if value > high:
            self.fail(value, where, f"Member must have value less than or equal to {high}")
            return None
        return value

    def string(
        self,
        value: Any,
        where: str,
        *,
        max_len: int,
        pattern: re.Pattern[str] | None = None,
        required: bool = False,
    ) -> str | None:
        if value is None:
            if required:
                self.fail(None, where, "Member must not be null")
            return None
        if not isinstance(value, str):
            self.fail(value, where, "Member must be a string")
            return None
        if len(value) > max_len:
            self.fail(value, where, f"Member must have length less than or equal to {max_len}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(
                value, where, f"Member must satisfy regular expression pattern: {pattern.pattern}"
            )
            return None
        return value


def function_name(c: Constraints, value: Any) -> str | None:
    """A bare function name, as CreateFunction takes it (ARNs are parsed by `arns`). A name
    that does not match is refused quoting the pattern of the model's FunctionName, as AWS
    words it (the member takes ARNs too)."""
    name = c.string(value, "functionName", max_len=limits.FUNCTION_NAME_MAX_CHARS, required=True)
    if name is not None and not _NAME.fullmatch(name):
        c.fail(
            name,
            "functionName",
            f"Member must satisfy regular expression pattern: {arns.REF_PATTERN_TEXT}",
        )
        return None
    return name


def handler(c: Constraints, value: Any, *, required: bool) -> str | None:
    return c.string(
        value, "handler", max_len=limits.HANDLER_MAX_CHARS, pattern=_HANDLER, required=required
    )


def role(c: Constraints, value: Any, *, required: bool) -> str | None:
    return c.string(value, "role", max_len=10_000, pattern=_ROLE, required=required)


def vpc_config(c: Constraints, value: Any) -> VpcConfig | None:
    """VpcConfig's shape, as botocore's model constrains it (the subnets' VPC is looked up
    by the caller: `control.vpc`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "vpcConfig", "Member must be a structure")
        return None
    subnets = _id_list(c, value.get("SubnetIds"), "vpcConfig.subnetIds", SUBNET_ID, 16)
    groups = _id_list(
        c, value.get("SecurityGroupIds"), "vpcConfig.securityGroupIds", SECURITY_GROUP_ID, 5
    )
    ipv6 = value.get("Ipv6AllowedForDualStack")
    if ipv6 is not None and not isinstance(ipv6, bool):
        c.fail(ipv6, "vpcConfig.ipv6AllowedForDualStack", "Member must be a boolean")
        return None
    if subnets is None or groups is None:
        return None
    return VpcConfig(tuple(subnets), tuple(groups), "", bool(ipv6))


def _id_list(
    c: Constraints, value: Any, where: str, pattern: re.Pattern[str], most: int
) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list):
        c.fail(value, where, "Member must be a list")
        return None
    shown = "[" + ", ".join(str(x) for x in value) + "]"
    if len(value) > most:
        c.fail(shown, where, f"Member must have length less than or equal to {most}")
        return None
    if not all(isinstance(x, str) and len(x) <= 1024 and pattern.fullmatch(x) for x in value):
        c.fail(
            shown,
            where,
            "Member must satisfy constraint: [Member must have length less than or equal to "
            "1024, Member must have length greater than or equal to 0, Member must satisfy "
            f"regular expression pattern: ^{pattern.pattern}$]",
        )
        return None
    return list(value)


def kms_key_arn(c: Constraints, value: Any) -> str | None:
    """KMSKeyArn: checked and recorded; Lamina encrypts with its data directory's key."""
    return c.string(value, "kMSKeyArn", max_len=10_000, pattern=_KMS_KEY_ARN)


def description(c: Constraints, value: Any) -> str | None:
    return c.string(value, "description", max_len=limits.DESCRIPTION_MAX_CHARS)


def timeout(c: Constraints, value: Any) -> int | None:
    return c.integer(value, "timeout", limits.TIMEOUT_MIN_S, limits.TIMEOUT_MAX_S)


def memory_size(c: Constraints, value: Any) -> int | None:
    return c.integer(value, "memorySize", limits.MEMORY_MIN_MB, limits.MEMORY_MAX_MB)


def ephemeral_storage(c: Constraints, value: Any) -> int | None:
    if not isinstance(value, dict):
        c.fail(value, "ephemeralStorage", "Member must be a structure")
        return None
    return c.integer(
        value.get("Size"), "ephemeralStorage.size", limits.EPHEMERAL_MIN_MB, limits.EPHEMERAL_MAX_MB
    )


def runtime(c: Constraints, value: Any) -> str | None:
    """Lambda's enum first (ValidationException), then what this host can run. A create
    without one is refused by `require_runtime`, after every model constraint was checked."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in LAMBDA_RUNTIMES:
        c.fail(
            value,
            "runtime",
            "Member must satisfy enum value set: [" + ", ".join(sorted(LAMBDA_RUNTIMES)) + "]",
        )
        return None
    return value


def runtime_available(value: str, catalog: RuntimeCatalog) -> None:
    if value in DEPRECATED_RUNTIMES:
        raise InvalidParameterValueError(
            f"The runtime parameter of {value} is no longer supported for creating or updating "
            "AWS Lambda functions. We recommend you use a supported runtime while creating or "
            "updating functions."
        )
    if implemented_family(value) is None:
        raise InvalidParameterValueError(
            f"Lamina does not implement the {value} runtime. Runtimes Lamina implements: "
            f"{', '.join(catalog.names()) or 'none'} (see `lamina runtimes`); any other "
            "language runs as a custom runtime (provided.al2023) with its own bootstrap."
        )
    if catalog.get(value) is None:
        missing = catalog.unavailable(value)
        if missing is not None:
            # Lamina implements it; the host lacks what it needs (e.g. a JDK of that release).
            raise InvalidParameterValueError(
                f"The runtime {value} is not available on this Lamina host: {missing}. "
                "Install it and restart Lamina (see `lamina runtimes`)."
            )
        available = ", ".join(catalog.names()) or "none"
        raise InvalidParameterValueError(
            f"The runtime {value} is not available on this Lamina host. "
            f"Available runtimes: {available} (see `lamina runtimes`)."
        )


def architectures(c: Constraints, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 1:
        c.fail(value, "architectures", "Member must have length less than or equal to 1")
        return None
    arch = value[0]
    if arch not in _ARCHITECTURES:
        c.fail(
            # as AWS prints a list in its messages: [a, b]
            "[" + ", ".join(str(item) for item in value) + "]",
            "architectures",
            "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
        )
        return None
    return (arch,)


def architecture_available(archs: tuple[str, ...] | None, catalog: RuntimeCatalog) -> None:
    """Refuse an architecture this host cannot run (natively or through qemu-user), rather
    than run the function on another one."""
    for arch in archs or ():
        if arch not in catalog.architectures:
            raise InvalidParameterValueError(
                f"Architectures [{arch}] cannot run on this Lamina host: it runs "
                f"{', '.join(sorted(catalog.architectures)) or 'none'} (an arm64 function "
                "needs an aarch64 host, or qemu-user registered with binfmt_misc; see "
                "`lamina runtimes`)."
            )


def environment(c: Constraints, value: Any) -> dict[str, str] | None:
    """`Environment` ({"Variables": {...}}) to the variables, by Lambda's rules."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "environment", "Member must be a structure")
        return None
    variables = value.get("Variables") or {}
    if not isinstance(variables, dict):
        c.fail(variables, "environment.variables", "Member must be a map")
        return None
    bad_keys = [k for k in variables if not isinstance(k, str) or not _ENV_KEY.fullmatch(k)]
    if bad_keys:
        c.fail(
            "[" + ", ".join(map(str, bad_keys)) + "]",
            "environment.variables",
            "Map keys must satisfy constraint: [Member must satisfy regular expression "
            f"pattern: {_ENV_KEY.pattern}]",
        )
        return None
    if any(not isinstance(v, str) for v in variables.values()):
        c.fail(variables, "environment.variables", "Map values must be strings")
        return None
    reserved = sorted(k for k in variables if k in RESERVED_ENV_KEYS)
    if reserved:
        c.defer(
            InvalidParameterValueError(
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided contains reserved keys that are "
                "currently not supported for modification. Reserved keys used in this request: "
                f"{', '.join(reserved)}"
            )
        )
        return None
    network = variables.get(NETWORK_VARIABLE)
    if network is not None and network not in NETWORK_VALUES:
        c.defer(
            InvalidParameterValueError(
                f"{NETWORK_VARIABLE} must be one of {', '.join(NETWORK_VALUES)} (got {network!r})."
            )
        )
        return None
    debug = variables.get(DEBUG_VARIABLE)
    if debug is not None and debug not in DEBUG_VALUES:
        c.defer(
            InvalidParameterValueError(
                f"{DEBUG_VARIABLE} must be one of {', '.join(DEBUG_VALUES)} (got {debug!r})."
            )
        )
        return None
    measured = json.dumps(variables, separators=(",", ":"))
    if len(measured.encode()) > limits.ENVIRONMENT_MAX_BYTES:
        c.defer(
            InvalidParameterValueError(
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided exceeded the 4KB limit. String "
                "measured: " + measured
            )
        )
        return None
    return dict(variables)


# ResourceArn as botocore's model spells it (DeadLetterConfig.TargetArn): any ARN, or nothing.
_RESOURCE_ARN = re.compile(r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()")
RESOURCE_ARN_MAX_CHARS = 10_000


def dead_letter_config(c: Constraints, value: Any) -> str | None:
    """`DeadLetterConfig` ({"TargetArn": ...}) to the target ARN; "" when the caller removes
    it (an empty or absent TargetArn, as Lambda takes it). What the ARN names is checked later.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "deadLetterConfig", "Member must be a structure")
        return None
    target = value.get("TargetArn")
    if target is None:
        return ""
    return c.string(
        target, "deadLetterConfig.targetArn", max_len=RESOURCE_ARN_MAX_CHARS, pattern=_RESOURCE_ARN
    )


# LoggingConfig.LogGroup as botocore's model constrains it.
_LOG_GROUP = re.compile(r"[\.\-_/#A-Za-z0-9]+")
LOG_GROUP_MAX_CHARS = 512
_LOGGING_ENUMS = (
    ("LogFormat", "logFormat", tuple(f.value for f in LogFormat)),
    ("ApplicationLogLevel", "applicationLogLevel", APPLICATION_LOG_LEVELS),
    ("SystemLogLevel", "systemLogLevel", SYSTEM_LOG_LEVELS),
)


def durable_config(c: Constraints, value: Any) -> DurableConfig | None:
    """`DurableConfig` (None: not given): ExecutionTimeout 1-31,622,400 s (required),
    RetentionPeriodInDays 1-90 (14 when left out), KMSKeyArn recorded as given."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "durableConfig", "Member must be a structure")
        return None
    timeout = value.get("ExecutionTimeout")
    retention = value.get("RetentionPeriodInDays", 14)
    kms = value.get("KMSKeyArn")
    ok = True
    if timeout is None:
        c.defer(InvalidParameterValueError("DurableConfig.ExecutionTimeout is required."))
        ok = False
    elif c.integer(timeout, "durableConfig.executionTimeout", 1, 31622400) is None:
        ok = False
    if c.integer(retention, "durableConfig.retentionPeriodInDays", 1, 90) is None:
        ok = False
    if kms is not None and not isinstance(kms, str):
        c.fail(kms, "durableConfig.kMSKeyArn", "Member must be a string")
        ok = False
    if not ok:
        return None
    assert isinstance(timeout, int) and isinstance(retention, int)
    return DurableConfig(timeout, retention, kms or None)


_TRACING_MODES = ("Active", "PassThrough")


def tracing_mode(c: Constraints, value: Any) -> str | None:
    """`TracingConfig`'s Mode (None: not given, or given without a Mode)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "tracingConfig", "Member must be a structure")
        return None
    mode = value.get("Mode")
    if mode is not None and mode not in _TRACING_MODES:
        c.fail(
            mode,
            "tracingConfig.mode",
            f"Member must satisfy enum value set: {_enum_text(_TRACING_MODES)}",
        )
        return None
    return mode if isinstance(mode, str) else None


def logging_config(c: Constraints, value: Any) -> dict[str, str] | None:
    """`LoggingConfig`'s members that the caller set, each checked on its own; how they
    combine with each other and with the function's current ones is `control/`'s rule."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "loggingConfig", "Member must be a structure")
        return None
    out: dict[str, str] = {}
    for key, where, allowed in _LOGGING_ENUMS:
        member = value.get(key)
        if member is None:
            continue
        if member not in allowed:
            c.fail(
                member,
                f"loggingConfig.{where}",
                f"Member must satisfy enum value set: [{', '.join(allowed)}]",
            )
            continue
        out[key] = member
    group = value.get("LogGroup")
    if isinstance(group, str) and not group:
        c.fail(
            group, "loggingConfig.logGroup", "Member must have length greater than or equal to 1"
        )
    elif group is not None:
        checked = c.string(
            group, "loggingConfig.logGroup", max_len=LOG_GROUP_MAX_CHARS, pattern=_LOG_GROUP
        )
        if checked is not None:
            out["LogGroup"] = checked
    return out


def merge_logging(current: LoggingConfig, given: dict[str, str]) -> LoggingConfig:
    """The function's LoggingConfig after a create or update that set `given` (an update
    changes only the members it names, as Lambda's does).

    Levels exist only in JSON format: naming one while the format is, or stays, Text is
    refused as Lambda refuses it; going back to Text drops them; JSON without them takes
    INFO for both, which Lambda then reports.
    """
    log_format = LogFormat(given.get("LogFormat", current.log_format.value))
    levels_given = "ApplicationLogLevel" in given or "SystemLogLevel" in given
    if log_format is LogFormat.TEXT:
        if levels_given:
            raise InvalidParameterValueError(
                'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel '
                'from your request or change the LogFormat to "JSON" and try again.'
            )
        application = system = None
    else:
        application = (
            given.get("ApplicationLogLevel") or current.application_log_level or DEFAULT_LOG_LEVEL
        )
        system = given.get("SystemLogLevel") or current.system_log_level or DEFAULT_LOG_LEVEL
    group = given.get("LogGroup", current.log_group)
    return LoggingConfig(log_format, application, system, group)


def package_type(c: Constraints, value: Any) -> None:
    """The model's enum (a ValidationException with the others)."""
    if value is not None and value not in ("Zip", "Image"):
        c.fail(value, "packageType", "Member must satisfy enum value set: [Image, Zip]")


#: ImageConfig's limits (botocore's model: StringList max 1500, WorkingDirectory max 1000)
IMAGE_CONFIG_LIST_MAX = 1500
WORKING_DIRECTORY_MAX_CHARS = 1000


def require_runtime(fields: dict[str, Any]) -> None:
    """A Zip function names its runtime (checked after the model's constraints, as Lambda
    does)."""
    if "runtime" not in fields:
        raise InvalidParameterValueError(
            "The Runtime parameter is required when PackageType is Zip."
        )


# -- layers ------------------------------------------------------------------------
# Patterns as botocore's `lambda` model spells them (LayerName, LayerVersionArn).
_LAYER_NAME = re.compile(
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
)
_LAYER_VERSION_ARN = re.compile(
    r"((arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+))"
)
LAYER_NAME_MAX_CHARS = 140
LAYER_VERSION_ARN_MAX_CHARS = 2048
LICENSE_INFO_MAX_CHARS = 512
COMPATIBLE_RUNTIMES_MAX = 15
COMPATIBLE_ARCHITECTURES_MAX = 2


def _enum_text(values: frozenset[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def layer_name(c: Constraints, value: Any) -> str | None:
    """LayerName as the layer operations take it: a name or a layer ARN (no version)."""
    if isinstance(value, str) and not value:
        c.fail(value, "layerName", "Member must have length greater than or equal to 1")
        return None
    return c.string(
        value, "layerName", max_len=LAYER_NAME_MAX_CHARS, pattern=_LAYER_NAME, required=True
    )


def layer_version_arn(c: Constraints, value: Any, where: str = "arn") -> str | None:
    return c.string(
        value,
        where,
        max_len=LAYER_VERSION_ARN_MAX_CHARS,
        pattern=_LAYER_VERSION_ARN,
        required=True,
    )


def layer_arns(c: Constraints, value: Any) -> list[str] | None:
    """A function's `Layers`: a list of layer version ARNs (what they name is checked later).

    More than `limits.LAYERS_MAX` is Lambda's InvalidParameterValueException, not a
    constraint violation, so it is left to the caller too.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(value, "layers", "Member must be a list")
        return None
    bad = [
        arn
        for arn in value
        if not isinstance(arn, str)
        or not 1 <= len(arn) <= LAYER_VERSION_ARN_MAX_CHARS
        or not _LAYER_VERSION_ARN.fullmatch(arn)
    ]
    if bad:
        c.fail(
            "[" + ", ".join(map(str, value)) + "]",
            "layers",
            "Member must satisfy constraint: [Member must have length less than or equal to "
            f"{LAYER_VERSION_ARN_MAX_CHARS}, Member must have length greater than or equal to 1, "
            f"Member must satisfy regular expression pattern: {_LAYER_VERSION_ARN.pattern}, "
            "Member must not be null]",
        )
        return None
    return list(value)


def license_info(c: Constraints, value: Any) -> str | None:
    return c.string(value, "licenseInfo", max_len=LICENSE_INFO_MAX_CHARS)


def compatible_runtimes(c: Constraints, value: Any) -> tuple[str, ...] | None:
    return _enum_list(
        c,
        value,
        "compatibleRuntimes",
        LAMBDA_RUNTIMES,
        COMPATIBLE_RUNTIMES_MAX,
        _enum_text(LAMBDA_RUNTIMES),
    )


def compatible_architectures(c: Constraints, value: Any) -> tuple[str, ...] | None:
    return _enum_list(
        c,
        value,
        "compatibleArchitectures",
        frozenset(_ARCHITECTURES),
        COMPATIBLE_ARCHITECTURES_MAX,
        "[x86_64, arm64]",
    )


def _enum_list(
    c: Constraints,
    value: Any,
    where: str,
    allowed: frozenset[str],
    max_len: int,
    allowed_text: str,
) -> tuple[str, ...] | None:
    """A list of at most `max_len` members of an enum, with Lambda's wording."""
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(value, where, "Member must be a list")
        return None
    shown = "[" + ", ".join(map(str, value)) + "]"
    if len(value) > max_len:
        c.fail(shown, where, f"Member must have length less than or equal to {max_len}")
        return None
    if any(not isinstance(item, str) or item not in allowed for item in value):
        c.fail(
            shown,
            where,
            f"Member must satisfy constraint: [Member must satisfy enum value set: {allowed_text}]",
        )
        return None
    return tuple(value)


def compatible_runtime(c: Constraints, value: Any) -> str | None:
    """The CompatibleRuntime filter of ListLayers/ListLayerVersions."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in LAMBDA_RUNTIMES:
        c.fail(
            value,
            "compatibleRuntime",
            f"Member must satisfy enum value set: {_enum_text(LAMBDA_RUNTIMES)}",
        )
        return None
    return str(value)


def compatible_architecture(c: Constraints, value: Any) -> str | None:
    """The CompatibleArchitecture filter of ListLayers/ListLayerVersions."""
    if value is None:
        return None
    if value not in _ARCHITECTURES:
        c.fail(
            value, "compatibleArchitecture", "Member must satisfy enum value set: [x86_64, arm64]"
        )
        return None
    return str(value)


def long_value(c: Constraints, value: Any, where: str) -> int | None:
    """A `long` that arrived as text (a path or query parameter)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
        return int(value)
    c.fail(value, where, "Member must be a number")
    return None


def max_items(c: Constraints, value: int | None, maximum: int = limits.LIST_MAX_ITEMS_MAX) -> int:
    """A list operation's MaxItems: Lambda's default (or `maximum`, if smaller) when absent,
    else 1 to `maximum` (a value out of range is reported through `c`)."""
    if value is None:
        return min(limits.LIST_MAX_ITEMS_DEFAULT, maximum)
    c.integer(value, "maxItems", 1, maximum)
    return value


def stale_revision() -> PreconditionFailedError:
    """A `RevisionId` precondition that does not hold (functions and aliases alike)."""
    return PreconditionFailedError(
        "The Revision Id provided does not match the latest Revision Id. Call the "
        "GetFunction/GetAlias API to retrieve the latest Revision Id"
    )
