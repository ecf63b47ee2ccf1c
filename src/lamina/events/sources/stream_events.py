"""The wire shapes of stream events, as Lambda's Kinesis source spells them, so that a handler
written for Kinesis runs unchanged on a NATS JetStream or Redis Streams mapping.

- `stream_record`: one record of the `Records` list (`kinesis.data` base64, `partitionKey`,
  `sequenceNumber`, `approximateArrivalTimestamp`), with `eventSource` naming the real source
  (`mapping.kind.event_source`) and `eventSourceARN` the mapping's source ARN.
- `window_event`: the tumbling-window event (`window`, `state`, `shardId`, ...).
- `failure_record`: the document sent to an on-failure destination when a batch is discarded,
  Lambda's stream invocation record with a batch-info block named for the source
  (`NatsStreamBatchInfo`, `RedisStreamBatchInfo`, in the place of `KinesisBatchInfo`).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lamina.events.sources.api import Outcome, StreamRecord
from lamina.mappings import EventSourceMapping, SourceKind, parse_source_arn

#: every NATS stream and Redis stream key is one ordered sequence: one shard, named as
#: Kinesis names its first shard so handlers that log or parse `eventID` keep working
SHARD_ID = "shardId-000000000000"

#: the batch-info block of the failure record, per source (Kinesis's is `KinesisBatchInfo`)
BATCH_INFO_KEY = {
    SourceKind.NATS: "NatsStreamBatchInfo",
    SourceKind.REDIS: "RedisStreamBatchInfo",
}

#: `requestContext.condition` of a failure record, as Lambda names them
RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


def stream_record(
    mapping: EventSourceMapping,
    shard_id: str,
    sequence: str,
    key: str,
    data: bytes,
    arrived_at: float,
    identity_arn: str | None = None,
) -> dict[str, Any]:
    """One Kinesis-shaped record. `identity_arn` is the function's execution role
    (`invokeIdentityArn`), left out when the caller does not know it."""
    parsed = parse_source_arn(mapping.source_arn)
    record: dict[str, Any] = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": round(arrived_at, 3),
        },
        "eventSource": mapping.kind.event_source,
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence}",
        "eventName": f"{mapping.kind.event_source}:record",
    }
    if identity_arn:
        record["invokeIdentityArn"] = identity_arn
    record["awsRegion"] = parsed.region if parsed else "us-east-1"
    record["eventSourceARN"] = mapping.source_arn
    return record


def batch_event(records: Sequence[StreamRecord]) -> dict[str, Any]:
    """The event of one batch."""
    return {"Records": [r.record for r in records]}


def window_event(
    mapping: EventSourceMapping,
    shard_id: str,
    records: Sequence[StreamRecord],
    window: tuple[float, float],
    state: dict[str, Any],
    *,
    final: bool,
    terminated_early: bool,
) -> dict[str, Any]:
    """The event of one invoke of a tumbling window (`window` = start, end epoch seconds)."""
    return {
        "Records": [r.record for r in records],
        "window": {"start": _iso_seconds(window[0]), "end": _iso_seconds(window[1])},
        "state": state,
        "shardId": shard_id,
        "eventSourceARN": mapping.source_arn,
        "isFinalInvokeForWindow": final,
        "isWindowTerminatedEarly": terminated_early,
    }


def failure_record(
    mapping: EventSourceMapping,
    shard_id: str,
    records: Sequence[StreamRecord],
    condition: str,
    invokes: int,
    last: Outcome | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Lambda's stream failure record for a discarded batch: metadata that locates the
    records in the stream (they are not included, as on Lambda). `last` is the outcome of
    the batch's last invoke (None: never invoked, e.g. expired first)."""
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": _executed(mapping, last)}
    if last is not None and last.status == "function_error":
        # Lambda's X-Amz-Function-Error spelling, not the error's own type
        handled = last.error_type == "Handled"
        response["functionError"] = "Handled" if handled else "Unhandled"
    first, end = records[0], records[-1]
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": mapping.function_arn,
            "condition": condition,
            "approximateInvokeCount": invokes,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso_millis(time.time() if now is None else now),
        BATCH_INFO_KEY.get(mapping.kind, "StreamBatchInfo"): {
            "shardId": shard_id,
            "startSequenceNumber": first.sequence,
            "endSequenceNumber": end.sequence,
            "approximateArrivalOfFirstRecord": _iso_millis(first.arrived_at),
            "approximateArrivalOfLastRecord": _iso_millis(end.arrived_at),
            "batchSize": len(records),
            "streamArn": mapping.source_arn,
        },
    }


def _executed(mapping: EventSourceMapping, last: Outcome | None) -> str:
    if last is not None and last.executed_version:
        return last.executed_version
    # a version-qualified mapping runs that version; an alias's version is known only to
    # the invoker (Outcome.executed_version)
    q = mapping.qualifier
    return q if q and q.isdigit() else "$LATEST"


def _iso_millis(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _iso_seconds(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
