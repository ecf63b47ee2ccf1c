"""Lambda's rules for a mapping's settings, per kind of source: defaults, limits, and the
members a kind does not take (each refused as Lambda refuses it, InvalidParameterValueException).

- SQS (Lambda's SQS): BatchSize 10 by default, at most 10,000 (10 for a FIFO queue); a batch
  over 10 needs MaximumBatchingWindowInSeconds of at least 1; FIFO queues take no window.
- RabbitMQ (Lambda's Amazon MQ): BatchSize 100 by default, at most 10,000; a 0.5 s window
  until one is set; exactly one queue; `SourceAccessConfigurations` BASIC_AUTH (a secret) and
  VIRTUAL_HOST.
- Streams (NATS JetStream, Redis Streams; Lambda's Kinesis rules): BatchSize 100 by default;
  StartingPosition required (AT_TIMESTAMP with a timestamp); retries, record age, bisect,
  parallelization, tumbling windows and an OnFailure destination (a function or an SQS queue).
- ScalingConfig.MaximumConcurrency: SQS, and RabbitMQ too (Lamina's pollers scale alike for
  both; Lambda offers it for SQS only). FunctionResponseTypes: SQS and streams (Lambda's
  Amazon MQ source takes no partial batch responses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.control.mapping_input import CheckedRequest
from lamina.errors import InvalidParameterValueError
from lamina.mappings import AccessConfig, EventSourceMapping, SourceKind, parse_source_arn

DEFAULT_BATCH_SIZE = {
    SourceKind.SQS: 10,
    SourceKind.RABBITMQ: 100,
    SourceKind.NATS: 100,
    SourceKind.REDIS: 100,
}
FIFO_BATCH_MAX = 10
#: a batch larger than this needs a batching window (SQS)
UNBATCHED_MAX = 10
RECORD_AGE_MIN_S = 60

# Members only streams take, and their names in the API.
_STREAM_ONLY = {
    "starting_position": "StartingPosition",
    "starting_timestamp": "StartingPositionTimestamp",
    "parallelization_factor": "ParallelizationFactor",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age": "MaximumRecordAgeInSeconds",
    "bisect": "BisectBatchOnFunctionError",
    "tumbling_window": "TumblingWindowInSeconds",
    "destination_config": "DestinationConfig",
}
_RABBITMQ_ONLY = {"queues": "Queues", "access": "SourceAccessConfigurations"}
_QUEUES_ONLY = {"scaling_config": "ScalingConfig"}
RABBITMQ_ACCESS = ("BASIC_AUTH", "VIRTUAL_HOST")


def unsupported(member: str) -> InvalidParameterValueError:
    return InvalidParameterValueError(
        f"Unsupported {member} parameter for given event source mapping type."
    )


@dataclass
class Settings:
    """The settings of a mapping that its kind's rules decide."""

    batch_size: int
    batching_window_s: int
    batching_window_default: bool
    filters: tuple[str, ...]
    report_batch_item_failures: bool
    maximum_concurrency: int | None
    on_failure: str | None
    queues: tuple[str, ...]
    access: tuple[AccessConfig, ...]
    starting_position: str | None
    starting_timestamp: float | None
    maximum_retry_attempts: int
    maximum_record_age_s: int
    bisect_on_error: bool
    parallelization_factor: int
    tumbling_window_s: int

    @classmethod
    def of(cls, m: EventSourceMapping) -> Settings:
        return cls(
            batch_size=m.batch_size,
            batching_window_s=m.batching_window_s,
            batching_window_default=m.batching_window_default,
            filters=m.filters,
            report_batch_item_failures=m.report_batch_item_failures,
            maximum_concurrency=m.maximum_concurrency,
            on_failure=m.on_failure,
            queues=m.queues,
            access=m.access,
            starting_position=m.starting_position,
            starting_timestamp=m.starting_timestamp,
            maximum_retry_attempts=m.maximum_retry_attempts,
            maximum_record_age_s=m.maximum_record_age_s,
            bisect_on_error=m.bisect_on_error,
            parallelization_factor=m.parallelization_factor,
            tumbling_window_s=m.tumbling_window_s,
        )

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply(
    kind: SourceKind, source_arn: str, req: CheckedRequest, current: EventSourceMapping | None
) -> Settings:
    """The settings after a create (`current` None) or an update of `current` with `req`."""
    _refuse_members(kind, req)
    s = (
        Settings.of(current)
        if current is not None
        else Settings(
            batch_size=DEFAULT_BATCH_SIZE[kind],
            batching_window_s=0,
            batching_window_default=True,
            filters=(),
            report_batch_item_failures=False,
            maximum_concurrency=None,
            on_failure=None,
            queues=(),
            access=(),
            starting_position=None,
            starting_timestamp=None,
            maximum_retry_attempts=-1,
            maximum_record_age_s=-1,
            bisect_on_error=False,
            parallelization_factor=1,
            tumbling_window_s=0,
        )
    )
    if req.batch_size is not None:
        s.batch_size = req.batch_size
    if req.batching_window is not None:
        s.batching_window_s = req.batching_window
        s.batching_window_default = False
    if req.filters is not None:
        s.filters = tuple(req.filters)
    if req.response_types is not None:
        s.report_batch_item_failures = bool(req.response_types)
    if req.scaling_given:
        s.maximum_concurrency = req.maximum_concurrency
    if req.queues is not None:
        s.queues = tuple(req.queues)
    if req.access is not None:
        s.access = tuple(req.access)
    if req.starting_position is not None:
        s.starting_position = req.starting_position
    if req.starting_timestamp is not None:
        s.starting_timestamp = req.starting_timestamp
    if req.maximum_retry_attempts is not None:
        s.maximum_retry_attempts = req.maximum_retry_attempts
    if req.maximum_record_age is not None:
        s.maximum_record_age_s = req.maximum_record_age
    if req.bisect is not None:
        s.bisect_on_error = req.bisect
    if req.parallelization_factor is not None:
        s.parallelization_factor = req.parallelization_factor
    if req.tumbling_window is not None:
        s.tumbling_window_s = req.tumbling_window
    if req.destination_given:
        if req.on_success:
            raise unsupported("DestinationConfig")
        s.on_failure = req.on_failure or None
    if kind is SourceKind.SQS:
        _sqs(source_arn, s)
    elif kind is SourceKind.RABBITMQ:
        _rabbitmq(s, creating=current is None)
    else:
        _stream(s, creating=current is None, req=req)
    return s


def _refuse_members(kind: SourceKind, req: CheckedRequest) -> None:
    if kind is SourceKind.SQS and "starting_position" in req.given:
        raise InvalidParameterValueError("StartingPosition is not valid for SQS event sources.")
    refused: dict[str, str] = {}
    if not kind.is_stream:
        refused |= _STREAM_ONLY
    if kind is not SourceKind.RABBITMQ:
        refused |= _RABBITMQ_ONLY
    if kind.is_stream:
        refused |= _QUEUES_ONLY
    for member, name in refused.items():
        if member in req.given:
            raise unsupported(name)
    # Lambda's Amazon MQ source takes no partial batch responses: a batch succeeds or fails
    # whole, so a mapping asking for them would be told something it does not get.
    if kind is SourceKind.RABBITMQ and req.response_types:
        raise unsupported("FunctionResponseTypes")


def _sqs(source_arn: str, s: Settings) -> None:
    arn = parse_source_arn(source_arn)
    fifo = arn is not None and (arn.name or "").endswith(".fifo")
    if fifo and s.batch_size > FIFO_BATCH_MAX:
        raise InvalidParameterValueError(
            f"BatchSize must be between 1 and {FIFO_BATCH_MAX} for FIFO queues."
        )
    if fifo and s.batching_window_s > 0:
        raise InvalidParameterValueError("Batching window is not supported for FIFO queues.")
    if s.batch_size > UNBATCHED_MAX and s.batching_window_s < 1:
        raise InvalidParameterValueError(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
            "greater than 10"
        )


def _rabbitmq(s: Settings, *, creating: bool) -> None:
    if creating and not s.queues:
        raise InvalidParameterValueError(
            "Queues is required for Amazon MQ (RabbitMQ) event sources: name the queue to read."
        )
    seen: set[str] = set()
    for entry in s.access:
        if entry.type not in RABBITMQ_ACCESS:
            raise InvalidParameterValueError(
                f"Unsupported SourceAccessConfiguration type {entry.type} for a RabbitMQ event "
                f"source: Lamina takes {' and '.join(RABBITMQ_ACCESS)}."
            )
        if entry.type in seen:
            raise InvalidParameterValueError(
                f"SourceAccessConfigurations names {entry.type} more than once."
            )
        seen.add(entry.type)


def _stream(s: Settings, *, creating: bool, req: CheckedRequest) -> None:
    if creating and s.starting_position is None:
        raise InvalidParameterValueError(
            "1 validation error detected: Value null at 'startingPosition' failed to satisfy "
            "constraint: Member must not be null."
        )
    if s.starting_timestamp is not None and s.starting_position != "AT_TIMESTAMP":
        raise InvalidParameterValueError("Timestamp only valid with StartingPosition AT_TIMESTAMP")
    if s.starting_position == "AT_TIMESTAMP" and s.starting_timestamp is None:
        raise InvalidParameterValueError(
            "StartingPositionTimestamp is required with StartingPosition AT_TIMESTAMP."
        )
    age = s.maximum_record_age_s
    if age != -1 and age < RECORD_AGE_MIN_S:
        raise InvalidParameterValueError(
            f"MaximumRecordAgeInSeconds must be -1 (records never expire) or between "
            f"{RECORD_AGE_MIN_S} and 604800, not {age}."
        )
    if s.on_failure is not None and not _failure_destination(s.on_failure):
        raise InvalidParameterValueError(
            "DestinationConfig.OnFailure.Destination must be a Lambda function ARN or an SQS "
            f"queue ARN (where Lamina delivers a stream's failure records), not {s.on_failure}."
        )


def _failure_destination(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) >= 6 and (
        (parts[2] == "lambda" and parts[5] == "function") or parts[2] == "sqs"
    )
