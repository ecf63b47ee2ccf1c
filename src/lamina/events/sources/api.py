"""The contract between the mapping runner (`manager.py`) and the per-broker modules.

Two families, because their delivery rules differ:

- **Queues** (RabbitMQ, SQS): messages are leased from the broker, the function gets a batch,
  and each message is acknowledged (deleted) once the function succeeded for it, or released
  back to the broker, whose own redelivery and dead-lettering then apply (as on Lambda: SQS's
  redrive policy, RabbitMQ's dead-letter exchange). `queues.py` holds the delivery rules
  (batching window, filters, partial batch failures, throttles, scaling); a broker module only
  implements `QueueSource`.
- **Streams** (NATS JetStream, Redis Streams): ordered, replayable; a position is checkpointed
  (in the broker: a durable consumer, a consumer group) only after the function succeeded for
  everything before it. `streams.py` holds the rules (per-shard order, retries, bisect,
  maximum record age, on-failure destination, parallelization by key, tumbling windows); a
  broker module only implements `StreamSource`.

Every method may raise `SourceUnavailable` (the broker cannot be reached, refuses the
credentials, the queue or stream does not exist): the runner reports it in the mapping's
`LastProcessingResult` as `PROBLEM: <message>`, closes the source, and opens it again later.
Nothing else a broker library raises may escape: a module translates its library's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lamina.mappings import Connection, EventSourceMapping, MappingState


class SourceUnavailable(Exception):
    """The source cannot be used now; `str()` says why, in words a user can act on."""


def redacted_url(url: str) -> str:
    """A broker URL without its credentials, for a `SourceUnavailable` message (it ends up in
    `LastProcessingResult`, which anyone who may read the mapping sees)."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://{tail}" if scheme else tail


@dataclass
class Message:
    """One message leased from a queue. `record` is the message as the function sees it
    (Lambda's record shape for the source, without batch-level fields); `body` is what
    FilterCriteria's `body`/`data` is matched against; `token` is the module's own handle for
    acknowledging or releasing it."""

    id: str
    body: bytes
    record: dict[str, Any]
    token: Any
    #: epoch seconds the broker received it, if it says (backlog age)
    sent_at: float | None = None
    received_at: float = field(default_factory=time.time)


class QueueSource(Protocol):
    """One mapping's view of one queue. The runner calls `receive` from up to
    `MaximumConcurrency` tasks at once; the other methods may run concurrently with it."""

    async def open(self) -> None:
        """Connect; raise `SourceUnavailable` if the queue cannot be read."""

    async def receive(self, max_messages: int, wait_s: float) -> list[Message]:
        """Up to `max_messages`, waiting up to `wait_s` for the first (long polling); an
        empty list if none came. Messages are leased: invisible to other consumers until
        acknowledged or released."""

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        """The function succeeded for these: delete them from the broker."""

    async def release(self, messages: Sequence[Message]) -> None:
        """The function failed for these: hand them back for the broker's redelivery (and
        its dead-lettering after its own retry count)."""

    def event(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The event the function is invoked with for this batch (e.g. `{"Records": [...]}`
        for SQS, `{"eventSource": "aws:rmq", "rmqMessagesByQueue": {...}}` for RabbitMQ)."""

    def failed_ids(self, response: Any, messages: Sequence[Message]) -> set[str] | None:
        """The ids of the messages a `ReportBatchItemFailures` response names as failed
        (`{"batchItemFailures": [{"itemIdentifier": ...}]}`); None if the response is not
        valid, which fails the whole batch as on Lambda."""

    async def backlog(self) -> int | None:
        """Messages waiting, if the broker says (for the runner's scaling and metrics)."""

    async def close(self) -> None:
        """Release everything still leased and disconnect. A second call does nothing."""


@dataclass
class StreamRecord:
    """One record of a stream. `key` is its partition key (per-key order is kept when
    `ParallelizationFactor` > 1); `record` is the Kinesis-shaped record the function gets."""

    sequence: str
    key: str
    data: bytes
    arrived_at: float  # epoch seconds (approximateArrivalTimestamp, record age)
    record: dict[str, Any]
    token: Any = None


class StreamSource(Protocol):
    """One mapping's view of one stream (a single shard: NATS and Redis streams are one
    ordered sequence each)."""

    shard_id: str

    async def open(self, starting_position: str, starting_timestamp: float | None) -> None:
        """Connect and position: at the checkpoint if one is stored, else at
        `starting_position` (TRIM_HORIZON, LATEST, AT_TIMESTAMP)."""

    async def read(self, max_records: int, wait_s: float) -> list[StreamRecord]:
        """The next records after the last one read (not after the checkpoint)."""

    async def checkpoint(self, records: Sequence[StreamRecord]) -> None:
        """Everything up to and including these is done (processed, or sent to the failure
        destination): a restart resumes after them."""

    async def lag(self) -> int | None:
        """Records behind the end of the stream, if known (Lambda's OffsetLag)."""

    async def close(self) -> None: ...


class SourceFactory(Protocol):
    """Makes the source of a mapping; one per kind, registered with the runner."""

    def __call__(self, mapping: EventSourceMapping, connection: Connection) -> Any: ...


@dataclass(frozen=True)
class Outcome:
    """What invoking the function with one batch came to."""

    #: "ok", "function_error" (handled or unhandled error, timeout), "throttled" (no
    #: concurrency: try again later, not an attempt), "unavailable" (the function cannot run
    #: now, e.g. not Active or deleted: try again later)
    status: str
    payload: bytes = b""
    error_type: str | None = None
    #: the version that ran (an alias's mapping: the version the alias chose), for the
    #: failure record's `executedVersion`; None if the invoker does not say
    executed_version: str | None = None


class Invoker(Protocol):
    """What the delivery rules use to run a mapping's function and reach its destinations
    (implemented by the runner over the scheduler and the async queue)."""

    async def invoke(self, mapping: EventSourceMapping, event: dict[str, Any]) -> Outcome: ...

    async def send_to_failure_destination(
        self, mapping: EventSourceMapping, record: dict[str, Any]
    ) -> None:
        """Deliver Lambda's failure record to `mapping.on_failure`; raises
        `SourceUnavailable` if it cannot (the batch is then not checkpointed)."""


@dataclass
class MappingStats:
    """Counters of one mapping, exported to `/metrics` and shown by `lamina sources`."""

    records_received: int = 0
    records_filtered: int = 0
    batches: int = 0
    function_errors: int = 0
    records_to_failure_destination: int = 0
    throttles: int = 0
    #: seconds between the oldest record of the last batch entering the source and its
    #: delivery (Lambda's IteratorAge / the SQS age of oldest message)
    backlog_age_s: float = 0.0
    #: records not yet read, where the broker says (Lambda's OffsetLag)
    lag: int | None = None
    pollers: int = 0
    #: CloudWatch's IteratorAge (ms) of each stream batch done, if someone records it
    on_iterator_age: Callable[[float], None] | None = field(default=None, repr=False, compare=False)
    #: each failed attempt to deliver a failure record (CloudWatch's
    #: DestinationDeliveryFailures), if someone records it
    on_delivery_failure: Callable[[], None] | None = field(default=None, repr=False, compare=False)


class MappingControl(Protocol):
    """What the runner needs of the mappings' owner (`control.event_sources`)."""

    def mappings(self) -> list[EventSourceMapping]:
        """Every mapping, in any state."""

    def get(self, uuid: str) -> EventSourceMapping | None: ...

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call `callback(uuid)` after a mapping was created, updated, moved to a new state
        by the API (enable, disable, delete) or removed."""

    async def settle(self, uuid: str, state: MappingState) -> None:
        """The runner's move: a CREATING/ENABLING/UPDATING mapping whose poller runs becomes
        ENABLED, a DISABLING one whose poller stopped becomes DISABLED. Ignored if the
        mapping is gone or has moved on meanwhile."""

    async def remove(self, uuid: str) -> None:
        """A DELETING mapping's poller has stopped: forget it."""

    def report(self, uuid: str, result: str) -> None:
        """Set `LastProcessingResult` (`RESULT_OK`, `RESULT_NONE`, `problem(...)`); cheap
        (called per batch), kept durably within a few seconds."""

    def connection(self, mapping: EventSourceMapping) -> Connection:
        """How to reach the mapping's source (broker URL with credentials, vhost, queue or
        stream name); raises `LookupError` with a readable message if it cannot be resolved
        (broker unregistered, secret missing, no `--sqs-endpoint`)."""

    def role_problem(self, mapping: EventSourceMapping) -> str | None:
        """Why the function's execution role may not read the source (None: it may)."""
