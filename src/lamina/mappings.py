"""Event-source mappings and the brokers they read from: the domain model shared by
`control/` (state, validation, storage) and `events/sources/` (the pollers).

No AWS wire spelling here (`api/` translates), and nothing that imports a client library.

ARN forms (the `EventSourceArn` CreateEventSourceMapping takes):

- RabbitMQ (Lambda's Amazon MQ source): a registered broker,
  `arn:aws:mq:<region>:<account>:broker:<NAME>:b-<id>`, with `Queues` naming one queue.
- SQS: `arn:aws:sqs:<region>:<account>:<QUEUE>`, a queue at the SQS-API endpoint the server is
  configured with (`--sqs-endpoint`); nothing to register.
- NATS JetStream: `arn:aws:nats:<region>:<account>:broker:<NAME>:stream/<STREAM>`, a stream
  on a registered NATS broker.
- Redis Streams: `arn:aws:redis:<region>:<account>:broker:<NAME>:stream/<KEY>`, a stream key
  on a registered Redis broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class SourceKind(StrEnum):
    """What a mapping reads from; decides its defaults, limits and event shape."""

    RABBITMQ = "rabbitmq"
    SQS = "sqs"
    NATS = "nats"
    REDIS = "redis"

    @property
    def is_stream(self) -> bool:
        """Ordered, replayable sources with Lambda's stream semantics (as Kinesis)."""
        return self in (SourceKind.NATS, SourceKind.REDIS)

    @property
    def event_source(self) -> str:
        """The `eventSource` the function's records carry."""
        return _EVENT_SOURCE[self]


_EVENT_SOURCE = {
    SourceKind.RABBITMQ: "aws:rmq",
    SourceKind.SQS: "aws:sqs",
    SourceKind.NATS: "lamina:nats",
    SourceKind.REDIS: "lamina:redis",
}

#: what the function's execution role must allow for each kind (checked against the source
#: ARN), as AWS requires e.g. `sqs:ReceiveMessage` of an SQS mapping's role
ROLE_ACTIONS: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.RABBITMQ: ("mq:DescribeBroker",),
    SourceKind.SQS: ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
    SourceKind.NATS: ("nats:ReadStream",),
    SourceKind.REDIS: ("redis:ReadStream",),
}


class MappingState(StrEnum):
    """Lambda's states of a mapping. Pollers run in CREATING, ENABLING, ENABLED and UPDATING
    (the first three settle to ENABLED once the poller has started); DISABLING settles to
    DISABLED and DELETING to gone once the poller has stopped."""

    CREATING = "Creating"
    ENABLING = "Enabling"
    ENABLED = "Enabled"
    DISABLING = "Disabling"
    DISABLED = "Disabled"
    UPDATING = "Updating"
    DELETING = "Deleting"

    @property
    def polling(self) -> bool:
        return self in _POLLING


_POLLING = frozenset(
    {MappingState.CREATING, MappingState.ENABLING, MappingState.ENABLED, MappingState.UPDATING}
)

#: `LastProcessingResult` values (a problem is `PROBLEM: <what>`)
RESULT_NONE = "No records processed"
RESULT_OK = "OK"


def problem(what: str) -> str:
    """A `LastProcessingResult` naming what stops the mapping, e.g. an unreachable broker."""
    return f"PROBLEM: {what}"


@dataclass(frozen=True)
class Broker:
    """A broker or stream server registered with Lamina (`lamina brokers add`)."""

    name: str
    kind: SourceKind  # never SQS
    id: str  # `b-<uuid>`, in the ARN
    arn: str
    #: the URL without its password (what listings show)
    display_url: str
    created: float  # epoch seconds


@dataclass(frozen=True)
class Connection:
    """How a poller reaches its source: the URL with the credentials to use (the broker's
    own, or the mapping's `BASIC_AUTH` secret's) and, for RabbitMQ, the virtual host."""

    kind: SourceKind
    url: str
    virtual_host: str | None = None
    #: for SQS: the queue's name, region and account (from its ARN) and the endpoint
    queue_name: str | None = None
    #: for NATS/Redis: the stream name or key
    stream: str | None = None


@dataclass(frozen=True)
class AccessConfig:
    """One `SourceAccessConfigurations` entry."""

    type: str  # BASIC_AUTH, VIRTUAL_HOST, ...
    uri: str


@dataclass(frozen=True)
class EventSourceMapping:
    """One mapping. `function_arn` is what the mapping invokes: the unqualified ARN for
    $LATEST, or the version or alias ARN it was created with."""

    uuid: str
    function_arn: str
    function_name: str
    qualifier: str | None  # None: $LATEST (unqualified)
    source_arn: str
    kind: SourceKind
    state: MappingState
    state_reason: str  # StateTransitionReason, e.g. "USER_INITIATED"
    last_modified: float  # epoch seconds
    last_result: str  # LastProcessingResult
    batch_size: int
    batching_window_s: int  # MaximumBatchingWindowInSeconds
    #: FilterCriteria patterns, each the JSON text the user gave (at most 5; AND-ed as OR)
    filters: tuple[str, ...] = ()
    report_batch_item_failures: bool = False  # FunctionResponseTypes
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency
    on_failure: str | None = None  # DestinationConfig.OnFailure.Destination
    queues: tuple[str, ...] = ()  # RabbitMQ
    access: tuple[AccessConfig, ...] = ()
    # streams only
    starting_position: str | None = None  # TRIM_HORIZON, LATEST, AT_TIMESTAMP
    starting_timestamp: float | None = None
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age_s: int = -1  # -1: forever
    bisect_on_error: bool = False
    parallelization_factor: int = 1
    tumbling_window_s: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    #: no MaximumBatchingWindowInSeconds was ever given: the kind's default window applies,
    #: which for RabbitMQ (Amazon MQ's) is 0.5 s, not a whole number of seconds
    batching_window_default: bool = False
    #: the function's execution role, for stream records' `invokeIdentityArn` (control fills
    #: it from the function's configuration when it hands a mapping out; None: unknown)
    role_arn: str | None = None

    @property
    def enabled(self) -> bool:
        return self.state.polling

    @property
    def batching_window(self) -> float:
        """Seconds the poller gathers records before invoking (what it should wait)."""
        if self.batching_window_default:
            return DEFAULT_BATCHING_WINDOW_S.get(self.kind, 0.0)
        return float(self.batching_window_s)


#: batching windows that apply until MaximumBatchingWindowInSeconds is set (Lambda: 500 ms
#: for Amazon MQ; 0 for SQS and streams)
DEFAULT_BATCHING_WINDOW_S: dict[SourceKind, float] = {SourceKind.RABBITMQ: 0.5}


_BROKER_ARN = re.compile(
    r"arn:aws:(mq|nats|redis):([a-z0-9-]+):(\d{12}):broker:([A-Za-z0-9_-]+)(?::(b-[0-9a-f-]+))?"
    r"(?::stream/(.+))?"
)


@dataclass(frozen=True)
class SourceArn:
    """An `EventSourceArn`, taken apart."""

    kind: SourceKind
    region: str
    account: str
    broker: str | None  # broker name (RabbitMQ, NATS, Redis)
    broker_id: str | None  # `b-...` (RabbitMQ)
    name: str | None  # SQS queue name, or NATS stream / Redis key


def parse_source_arn(arn: str) -> SourceArn | None:
    """The parts of an ARN of one of the forms above; None for anything else."""
    m = re.fullmatch(r"arn:aws:sqs:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,80}(?:\.fifo)?)", arn)
    if m:
        return SourceArn(SourceKind.SQS, m[1], m[2], None, None, m[3])
    m = _BROKER_ARN.fullmatch(arn)
    if not m:
        return None
    service, region, account, broker, broker_id, stream = m.groups()
    if service == "mq":
        if stream is not None or broker_id is None:
            return None
        return SourceArn(SourceKind.RABBITMQ, region, account, broker, broker_id, None)
    if stream is None:
        return None
    kind = SourceKind.NATS if service == "nats" else SourceKind.REDIS
    return SourceArn(kind, region, account, broker, broker_id, stream)
