"""What Create/UpdateEventSourceMapping ask for, checked against botocore's `lambda` model.

`MappingRequest` holds the members as the caller sent them (domain names, raw values);
`check_shapes` applies the model's constraints (types, ranges, enums, patterns), which Lambda
reports together as one ValidationException, and returns the values in domain form. What the
values mean for a kind of source (defaults, per-kind limits, members a kind does not take) is
`control.mapping_rules`' business.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lamina.control import validation as v
from lamina.control.tags import check_tags
from lamina.mappings import AccessConfig

#: the model's Arn pattern (EventSourceArn)
ARN = re.compile(
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+"
    r"-\d{1})?:(\d{12})?:(.*)"
)
#: DestinationConfig's DestinationArn pattern
_DESTINATION = re.compile(
    r"$|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:"
    r"((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
_URI = re.compile(r"[ a-zA-Z0-9-\/*:_+=.@-]*")
_ANY = re.compile(r"[\s\S]*")
POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_POSITIONS_TEXT = "[LATEST, AT_TIMESTAMP, TRIM_HORIZON]"
ACCESS_TYPES = (
    "BASIC_AUTH",
    "VPC_SUBNET",
    "VPC_SECURITY_GROUP",
    "SASL_SCRAM_512_AUTH",
    "SASL_SCRAM_256_AUTH",
    "VIRTUAL_HOST",
    "CLIENT_CERTIFICATE_TLS_AUTH",
    "SERVER_ROOT_CA_CERTIFICATE",
    "OAUTHBEARER_AUTH",
    "OAUTHBEARER_SCOPE",
    "OAUTHBEARER_AUDIENCE",
    "OAUTHBEARER_LOGICAL_CLUSTER",
    "OAUTHBEARER_IDENTITY_POOL",
    "IAM_AUTH",
    "IAM_OAUTHBEARER_AUTH",
)
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
_LATEST_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z


@dataclass
class MappingRequest:
    """The members of a Create or Update request, by domain name; None: not given."""

    function_name: Any = None
    source_arn: Any = None
    enabled: Any = None
    batch_size: Any = None
    batching_window: Any = None
    filter_criteria: Any = None
    scaling_config: Any = None
    destination_config: Any = None
    starting_position: Any = None
    starting_timestamp: Any = None
    maximum_retry_attempts: Any = None
    maximum_record_age: Any = None
    bisect: Any = None
    parallelization_factor: Any = None
    tumbling_window: Any = None
    queues: Any = None
    access: Any = None
    response_types: Any = None
    tags: Any = None
    #: members of the model Lamina does not implement, that the caller set
    unsupported: list[str] = field(default_factory=list)


@dataclass
class CheckedRequest:
    """A request's values after the model's constraints; None: not given. `filters` and
    `response_types` are lists; `on_failure`/`on_success` the destination ARNs ("" when the
    caller sent an empty destination, which removes it)."""

    function_name: str | None = None
    source_arn: str | None = None
    enabled: bool | None = None
    batch_size: int | None = None
    batching_window: int | None = None
    filters: list[str] | None = None
    maximum_concurrency: int | None = None
    scaling_given: bool = False
    destination_given: bool = False
    on_failure: str | None = None
    on_success: str | None = None
    starting_position: str | None = None
    starting_timestamp: float | None = None
    maximum_retry_attempts: int | None = None
    maximum_record_age: int | None = None
    bisect: bool | None = None
    parallelization_factor: int | None = None
    tumbling_window: int | None = None
    queues: list[str] | None = None
    access: list[AccessConfig] | None = None
    response_types: list[str] | None = None
    tags: dict[str, str] | None = None
    #: the members given, by domain name (an update changes only these)
    given: set[str] = field(default_factory=set)


def check_shapes(req: MappingRequest, *, create: bool) -> CheckedRequest:
    """The model's constraints on every member (ValidationException, all problems at once)."""
    c = v.Constraints()
    out = CheckedRequest()
    out.given = {
        name
        for name in (
            "function_name",
            "source_arn",
            "enabled",
            "batch_size",
            "batching_window",
            "filter_criteria",
            "scaling_config",
            "destination_config",
            "starting_position",
            "starting_timestamp",
            "maximum_retry_attempts",
            "maximum_record_age",
            "bisect",
            "parallelization_factor",
            "tumbling_window",
            "queues",
            "access",
            "response_types",
            "tags",
        )
        if getattr(req, name) is not None
    }
    if create or req.function_name is not None:
        out.function_name = c.string(
            req.function_name, "functionName", max_len=256, required=create
        )
        if isinstance(req.function_name, str) and not req.function_name:
            c.fail("", "functionName", "Member must have length greater than or equal to 1")
    out.source_arn = c.string(req.source_arn, "eventSourceArn", max_len=10_000, pattern=ARN)
    out.enabled = _boolean(c, req.enabled, "enabled")
    if req.batch_size is not None:
        out.batch_size = c.integer(req.batch_size, "batchSize", 1, 10_000)
    if req.batching_window is not None:
        out.batching_window = c.integer(
            req.batching_window, "maximumBatchingWindowInSeconds", 0, 300
        )
    if req.parallelization_factor is not None:
        out.parallelization_factor = c.integer(
            req.parallelization_factor, "parallelizationFactor", 1, 10
        )
    if req.maximum_retry_attempts is not None:
        out.maximum_retry_attempts = c.integer(
            req.maximum_retry_attempts, "maximumRetryAttempts", -1, 10_000
        )
    if req.maximum_record_age is not None:
        out.maximum_record_age = c.integer(
            req.maximum_record_age, "maximumRecordAgeInSeconds", -1, 604_800
        )
    if req.tumbling_window is not None:
        out.tumbling_window = c.integer(req.tumbling_window, "tumblingWindowInSeconds", 0, 900)
    out.bisect = _boolean(c, req.bisect, "bisectBatchOnFunctionError")
    if req.starting_position is not None:
        if req.starting_position not in POSITIONS:
            c.fail(
                req.starting_position,
                "startingPosition",
                f"Member must satisfy enum value set: {_POSITIONS_TEXT}",
            )
        else:
            out.starting_position = req.starting_position
    out.starting_timestamp = _timestamp(c, req.starting_timestamp)
    out.filters = _filters(c, req.filter_criteria)
    if req.scaling_config is not None:
        out.scaling_given = True
        out.maximum_concurrency = _scaling(c, req.scaling_config)
    if req.destination_config is not None:
        out.destination_given = True
        out.on_success, out.on_failure = _destinations(c, req.destination_config)
    out.queues = _queues(c, req.queues)
    out.access = _access(c, req.access)
    out.response_types = _response_types(c, req.response_types)
    out.tags = check_tags(c, req.tags)
    c.check()
    return out


def _boolean(c: v.Constraints, value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        c.fail(value, where, "Member must be a boolean")
        return None
    return value


def _timestamp(c: v.Constraints, value: Any) -> float | None:
    """StartingPositionTimestamp: epoch seconds (rest-json), or an ISO 8601 text."""
    if value is None:
        return None
    found: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        found = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            found = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    # A time before the epoch or after year 9999 is no position in any stream (and no
    # client could read it back).
    if found is None or not 0 <= found <= _LATEST_TIMESTAMP:
        c.fail(value, "startingPositionTimestamp", "Member must be a timestamp")
        return None
    return found


def _filters(c: v.Constraints, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "filterCriteria", "Member must be a structure")
        return None
    filters = value.get("Filters", [])
    if not isinstance(filters, list):
        c.fail(filters, "filterCriteria.filters", "Member must be a list")
        return None
    out = []
    for i, item in enumerate(filters, 1):
        where = f"filterCriteria.filters.{i}.member.pattern"
        if not isinstance(item, dict):
            c.fail(item, f"filterCriteria.filters.{i}.member", "Member must be a structure")
            continue
        pattern = c.string(item.get("Pattern"), where, max_len=4096, pattern=_ANY)
        # A filter without a pattern is a pattern Lambda cannot compile: `compile_filters`
        # refuses "" with Lambda's InvalidParameterValueException.
        out.append(pattern if pattern is not None else "")
    return out


def _scaling(c: v.Constraints, value: Any) -> int | None:
    if not isinstance(value, dict):
        c.fail(value, "scalingConfig", "Member must be a structure")
        return None
    concurrency = value.get("MaximumConcurrency")
    if concurrency is None:
        return None  # an empty ScalingConfig removes it
    return c.integer(concurrency, "scalingConfig.maximumConcurrency", 2, 1000)


def _destinations(c: v.Constraints, value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, dict):
        c.fail(value, "destinationConfig", "Member must be a structure")
        return None, None
    found: list[str | None] = []
    for key, where in (("OnSuccess", "onSuccess"), ("OnFailure", "onFailure")):
        member = value.get(key)
        if member is None:
            found.append(None)
            continue
        if not isinstance(member, dict):
            c.fail(member, f"destinationConfig.{where}", "Member must be a structure")
            found.append(None)
            continue
        arn = c.string(
            member.get("Destination", ""),
            f"destinationConfig.{where}.destination",
            max_len=350,
            pattern=_DESTINATION,
        )
        found.append(arn)
    return found[0], found[1]


def _queues(c: v.Constraints, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(value, "queues", "Member must be a list")
        return None
    shown = "[" + ", ".join(map(str, value)) + "]"
    if len(value) != 1:
        bound = "greater than or equal to 1" if not value else "less than or equal to 1"
        c.fail(shown, "queues", f"Member must have length {bound}")
        return None
    if not all(isinstance(q, str) and 1 <= len(q) <= 1000 for q in value):
        c.fail(
            shown,
            "queues",
            "Member must satisfy constraint: [Member must have length less than or equal to "
            "1000, Member must have length greater than or equal to 1, Member must satisfy "
            "regular expression pattern: [\\s\\S]*, Member must not be null]",
        )
        return None
    return list(value)


def _access(c: v.Constraints, value: Any) -> list[AccessConfig] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(value, "sourceAccessConfigurations", "Member must be a list")
        return None
    if len(value) > 23:
        c.fail(
            value, "sourceAccessConfigurations", "Member must have length less than or equal to 23"
        )
        return None
    out = []
    for i, item in enumerate(value, 1):
        where = f"sourceAccessConfigurations.{i}.member"
        if not isinstance(item, dict):
            c.fail(item, where, "Member must be a structure")
            continue
        kind = item.get("Type")
        if kind not in ACCESS_TYPES:
            c.fail(
                kind,
                f"{where}.type",
                "Member must satisfy enum value set: [" + ", ".join(ACCESS_TYPES) + "]",
            )
            continue
        uri = item.get("URI")
        if isinstance(uri, str) and not uri:
            c.fail(uri, f"{where}.uRI", "Member must have length greater than or equal to 1")
            continue
        checked = c.string(uri, f"{where}.uRI", max_len=200, pattern=_URI, required=True)
        if checked is not None:
            out.append(AccessConfig(kind, checked))
    return out


def _response_types(c: v.Constraints, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(value, "functionResponseTypes", "Member must be a list")
        return None
    shown = "[" + ", ".join(map(str, value)) + "]"
    if len(value) > 1:
        c.fail(shown, "functionResponseTypes", "Member must have length less than or equal to 1")
        return None
    if any(t != REPORT_BATCH_ITEM_FAILURES for t in value):
        c.fail(
            shown,
            "functionResponseTypes",
            "Member must satisfy constraint: [Member must satisfy enum value set: "
            f"[{REPORT_BATCH_ITEM_FAILURES}]]",
        )
        return None
    return list(value)
