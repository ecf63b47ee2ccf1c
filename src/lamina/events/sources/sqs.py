"""The SQS source: Lambda's `aws:sqs` event source against any SQS-API endpoint (AWS SQS
itself, or a self-hosted SQS-compatible server), behind the `QueueSource` contract.

What it does as Lambda does:
- long polls (ReceiveMessage, up to 10 messages and 20 s a call, every system and message
  attribute), draining what is already there to fill a larger batch;
- records in Lambda's `aws:sqs` shape (message attributes in camelCase, binary values in
  base64);
- deletes the messages the function succeeded for (DeleteMessageBatch);
- leaves the ones it failed for alone: they become visible again when the queue's visibility
  timeout runs out, so the queue's redrive policy (maxReceiveCount, dead-letter queue) and
  the back-off it gives work as on AWS;
- reads `batchItemFailures` as Lambda does (an unknown or malformed item fails the batch).

What Lamina adds: while the runner holds a message (waiting for concurrency, a long batching
window, a slow function), a heartbeat extends its visibility before it lapses, so it is not
delivered to a second poller meanwhile; the extension stops once the message is acknowledged,
released or the source closed, and then the visibility timeout runs its normal course.

The visibility timeout itself is the queue's: AWS advises at least six times the function's
timeout (docs/event-sources.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lamina.events.sources.api import Message, SourceUnavailable
from lamina.events.sources.sqs_client import SqsApiError, SqsClient, SqsUnreachable
from lamina.mappings import Connection, EventSourceMapping, SourceKind, parse_source_arn

log = logging.getLogger(__name__)

#: SQS's limits on one call
_MAX_PER_RECEIVE = 10
_MAX_PER_BATCH_CALL = 10
_MAX_WAIT_S = 20
#: SQS refuses a visibility that reaches past 12 hours from the receive
_MAX_VISIBILITY_S = 12 * 60 * 60
#: how long before a lease lapses the heartbeat extends it (at most; half the timeout for
#: short ones), leaving room for the call itself
_HEARTBEAT_MARGIN_S = 10.0

_MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException"})
_BAD_CREDENTIALS = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "AuthFailure",
    }
)


@dataclass
class _Lease:
    """A message this source holds: its visibility lapses at `expires` (monotonic)."""

    handle: str
    message_id: str
    received: float
    expires: float


class SqsSource:
    """One mapping's view of one SQS queue (see the module's docstring).

    `Message.token` is the message's receipt handle. `open()` resolves the queue's URL and
    reads its visibility timeout; every method translates the endpoint's errors into
    `SourceUnavailable`.
    """

    def __init__(self, mapping: EventSourceMapping, connection: Connection) -> None:
        self._setup(mapping.source_arn, connection, attempts=3)

    @classmethod
    def for_queue(cls, source_arn: str, connection: Connection) -> SqsSource:
        """A source for a queue without a mapping, to read its attributes once (each call
        tried once: an API request is waiting for the answer)."""
        source = cls.__new__(cls)
        source._setup(source_arn, connection, attempts=1)
        return source

    def _setup(self, source_arn: str, connection: Connection, *, attempts: int) -> None:
        arn = parse_source_arn(source_arn)
        if arn is None or arn.kind is not SourceKind.SQS or arn.name is None:
            raise SourceUnavailable(f"{source_arn} is not an SQS queue ARN")
        self.arn = source_arn
        self.region = arn.region
        self.account = arn.account
        self.queue_name = connection.queue_name or arn.name
        self.fifo = self.queue_name.endswith(".fifo")
        endpoint = connection.url or f"https://sqs.{arn.region}.amazonaws.com"
        self._client = SqsClient(endpoint, arn.region, attempts=attempts)
        self._queue_url: str | None = None
        #: the queue's VisibilityTimeout (seconds), read at open and with each backlog()
        self.visibility_timeout = 30
        self._held: dict[str, _Lease] = {}
        self._wake = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise SourceUnavailable("the SQS source is closed")
        if self._queue_url is not None:
            return
        operation = "GetQueueUrl"
        try:
            await self._client.open()
            found = await self._client.call(
                operation,
                {"QueueName": self.queue_name, "QueueOwnerAWSAccountId": self.account},
            )
            self._queue_url = str(found["QueueUrl"])
            operation = "GetQueueAttributes"
            await self._read_attributes()
        except (SqsApiError, SqsUnreachable) as e:
            self._queue_url = None
            await self._client.close()
            raise self._unavailable(e, operation) from None
        self._heartbeat = asyncio.create_task(
            self._extend_leases(), name=f"sqs-heartbeat:{self.queue_name}"
        )

    async def close(self) -> None:
        """Stop extending what is still held (it becomes visible when its visibility timeout
        runs out, as after a failure) and disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._held.clear()
        await self._client.close()

    # -- receiving ---------------------------------------------------------------------

    async def receive(self, max_messages: int, wait_s: float) -> list[Message]:
        """Up to `max_messages`: one long poll of up to `wait_s` (longer waits are several
        polls of 20 s) for the first, then what is already in the queue without waiting, 10
        a call, until a call returns fewer than it asked for."""
        url = self._url()
        want = max(1, max_messages)
        deadline = time.monotonic() + max(0.0, wait_s)
        got: list[Message] = []
        try:
            while len(got) < want:
                ask = min(_MAX_PER_RECEIVE, want - len(got))
                remaining = deadline - time.monotonic()
                wait = 0 if got or remaining <= 0 else min(_MAX_WAIT_S, math.ceil(remaining))
                try:
                    batch = await self._receive_once(url, ask, wait)
                except SourceUnavailable:
                    if got:
                        # Hand over what is leased already; the next call reports the problem.
                        break
                    raise
                got.extend(batch)
                if got and len(batch) < ask:
                    break
                if not got and time.monotonic() >= deadline:
                    break
        except asyncio.CancelledError:
            # Leased but never handed over: make them visible now rather than after the
            # visibility timeout (their receive count has already gone up, as on AWS).
            if got:
                self._forget(got)
                self._spawn(self._set_visibility([m.token for m in got], 0))
            raise
        return got

    async def _receive_once(self, url: str, ask: int, wait: int) -> list[Message]:
        params = {
            "QueueUrl": url,
            "MaxNumberOfMessages": ask,
            "WaitTimeSeconds": wait,
            "MessageSystemAttributeNames": ["All"],
            # The deprecated spelling too: SQS-compatible servers that predate the new one
            # read only this (AWS SQS and moto take both).
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        try:
            # The read timeout outlasts the long poll itself.
            response = await self._client.call("ReceiveMessage", params, read_timeout=wait + 15.0)
        except (SqsApiError, SqsUnreachable) as e:
            raise self._unavailable(e, "ReceiveMessage") from None
        now = time.monotonic()
        messages = [self._message(raw) for raw in response.get("Messages") or ()]
        if messages and not self._closed:
            for m in messages:
                self._held[m.token] = _Lease(m.token, m.id, now, now + self.visibility_timeout)
            self._wake.set()
        return messages

    def _message(self, raw: dict[str, Any]) -> Message:
        record = sqs_record(raw, self.arn, self.region)
        sent = raw.get("Attributes", {}).get("SentTimestamp")
        return Message(
            id=record["messageId"],
            body=record["body"].encode(),
            record=record,
            token=record["receiptHandle"],
            sent_at=int(sent) / 1000 if sent and str(sent).isdigit() else None,
        )

    # -- settling ----------------------------------------------------------------------

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        """Delete them (DeleteMessageBatch, 10 a call; failed entries are tried once more).
        An entry that still fails (typically a receipt handle that expired because the
        message became visible again and was received anew) is logged, not raised: the
        message will be delivered again, as at-least-once allows."""
        self._forget(messages)
        url = self._url()
        handles = [m.token for m in messages]
        for start in range(0, len(handles), _MAX_PER_BATCH_CALL):
            chunk = handles[start : start + _MAX_PER_BATCH_CALL]
            failed = await self._batch("DeleteMessageBatch", url, chunk, {})
            if failed:
                failed = await self._batch("DeleteMessageBatch", url, list(failed), {})
            for reason in failed.values():
                log.warning(
                    "SQS queue %s: could not delete a message after the function succeeded "
                    "for it (%s); it will be delivered again",
                    self.queue_name,
                    reason,
                )

    async def release(self, messages: Sequence[Message]) -> None:
        """The function failed for them: stop extending their visibility and leave them
        in flight. As on Lambda, they become visible again when the queue's visibility
        timeout runs out; each receive counts towards the redrive policy's maxReceiveCount."""
        self._forget(messages)

    def event(self, messages: Sequence[Message]) -> dict[str, Any]:
        return {"Records": [m.record for m in messages]}

    def failed_ids(self, response: Any, messages: Sequence[Message]) -> set[str] | None:
        return batch_item_failures(response, messages, fifo=self.fifo)

    async def backlog(self) -> int | None:
        """ApproximateNumberOfMessages (and, in passing, the visibility timeout anew)."""
        try:
            return await self._read_attributes()
        except (SqsApiError, SqsUnreachable) as e:
            raise self._unavailable(e, "GetQueueAttributes") from None

    # -- internals ---------------------------------------------------------------------

    def _url(self) -> str:
        if self._closed or self._queue_url is None:
            raise SourceUnavailable(
                f"the SQS source for {self.queue_name} is not open"
                if not self._closed
                else f"the SQS source for {self.queue_name} is closed"
            )
        return self._queue_url

    async def _read_attributes(self) -> int:
        response = await self._client.call(
            "GetQueueAttributes",
            {
                "QueueUrl": self._queue_url,
                "AttributeNames": ["ApproximateNumberOfMessages", "VisibilityTimeout"],
            },
        )
        attributes = response.get("Attributes") or {}
        with contextlib.suppress(KeyError, ValueError):
            self.visibility_timeout = int(attributes["VisibilityTimeout"])
        try:
            return int(attributes["ApproximateNumberOfMessages"])
        except (KeyError, ValueError):
            return 0

    def _forget(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self._held.pop(m.token, None)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _batch(
        self, operation: str, url: str, handles: list[str], extra: dict[str, Any]
    ) -> dict[str, str]:
        """One Delete/ChangeMessageVisibility batch call; the handles that failed, with why.
        Raises `SourceUnavailable` if the call itself fails."""
        entries = [{"Id": str(i), "ReceiptHandle": h, **extra} for i, h in enumerate(handles)]
        try:
            response = await self._client.call(operation, {"QueueUrl": url, "Entries": entries})
        except (SqsApiError, SqsUnreachable) as e:
            raise self._unavailable(e, operation) from None
        failed: dict[str, str] = {}
        for entry in response.get("Failed") or ():
            index = int(entry.get("Id", -1))
            if 0 <= index < len(handles):
                failed[handles[index]] = f"{entry.get('Code')}: {entry.get('Message', '')}"
        return failed

    async def _set_visibility(self, handles: list[str], seconds: int) -> dict[str, str]:
        if not handles or self._queue_url is None:
            return {}
        failed: dict[str, str] = {}
        for start in range(0, len(handles), _MAX_PER_BATCH_CALL):
            chunk = handles[start : start + _MAX_PER_BATCH_CALL]
            try:
                failed.update(
                    await self._batch(
                        "ChangeMessageVisibilityBatch",
                        self._queue_url,
                        chunk,
                        {"VisibilityTimeout": seconds},
                    )
                )
            except SourceUnavailable as e:
                failed.update(dict.fromkeys(chunk, str(e)))
        return failed

    async def _extend_leases(self) -> None:
        """The heartbeat: extend each held message's visibility by the queue's visibility
        timeout shortly before it lapses, until it is acknowledged or released."""
        while True:
            self._wake.clear()
            pause: float | None = None
            try:
                pause = await self._extend_due()
            except Exception:  # never let the heartbeat die silently
                log.exception("SQS queue %s: extending visibility failed", self.queue_name)
                pause = 1.0
            if pause is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def _extend_due(self) -> float | None:
        """Extend the leases that lapse within the margin; seconds until the next one is due
        (None: nothing held)."""
        timeout = self.visibility_timeout
        if timeout <= 0 or not self._held:
            # A visibility timeout of 0 makes every message visible at once: nothing to keep.
            return None
        margin = min(_HEARTBEAT_MARGIN_S, timeout / 2)
        now = time.monotonic()
        due: list[_Lease] = []
        for lease in list(self._held.values()):
            if lease.expires - margin > now:
                continue
            if now - lease.received + timeout >= _MAX_VISIBILITY_S:
                log.warning(
                    "SQS queue %s: message %s has been held for 12 hours, SQS's limit; it "
                    "becomes visible again",
                    self.queue_name,
                    lease.message_id,
                )
                self._held.pop(lease.handle, None)
                continue
            due.append(lease)
        if due:
            failed = await self._set_visibility([lease.handle for lease in due], timeout)
            for lease in due:
                if lease.handle not in self._held:
                    continue  # settled meanwhile: a failure to extend it does not matter
                if lease.handle in failed:
                    log.warning(
                        "SQS queue %s: could not extend the visibility of message %s (%s); "
                        "it may be delivered again while still being processed",
                        self.queue_name,
                        lease.message_id,
                        failed[lease.handle],
                    )
                    self._held.pop(lease.handle, None)
                else:
                    # Measured from before the call: SQS counts from when it applied it.
                    lease.expires = now + timeout
        if not self._held:
            return None
        next_due = min(lease.expires for lease in self._held.values()) - margin
        return max(0.05, next_due - time.monotonic())

    def _unavailable(self, e: Exception, operation: str) -> SourceUnavailable:
        where = f"SQS queue {self.queue_name} (account {self.account}) at {self._client.endpoint}"
        if isinstance(e, SqsUnreachable):
            return SourceUnavailable(str(e))
        assert isinstance(e, SqsApiError)
        if e.code in _MISSING_QUEUE:
            return SourceUnavailable(f"the {where} does not exist")
        if e.code in _DENIED:
            return SourceUnavailable(f"{operation} on the {where} was denied: {e.message}")
        if e.code in _BAD_CREDENTIALS:
            return SourceUnavailable(
                f"the SQS endpoint {self._client.endpoint} refused Lamina's credentials "
                f"({e.code}: {e.message}); the server takes them from the usual AWS chain"
            )
        return SourceUnavailable(f"{operation} on the {where} failed: {e}")


async def queue_visibility_timeout(endpoint: str, source_arn: str) -> int:
    """The VisibilityTimeout (seconds) of the queue `source_arn` names at `endpoint`, for
    checking a mapping against its function's timeout as Lambda does on
    CreateEventSourceMapping and UpdateEventSourceMapping. Raises `SourceUnavailable` if the
    queue cannot be read."""
    source = SqsSource.for_queue(source_arn, Connection(SourceKind.SQS, endpoint))
    try:
        await source.open()
        return source.visibility_timeout
    finally:
        await source.close()


def sqs_record(raw: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage message (botocore's parsed shape) as the record of Lambda's
    `aws:sqs` event."""
    record: dict[str, Any] = {
        "messageId": raw["MessageId"],
        "receiptHandle": raw["ReceiptHandle"],
        "body": raw.get("Body", ""),
        "attributes": dict(raw.get("Attributes") or {}),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in (raw.get("MessageAttributes") or {}).items()
        },
    }
    if raw.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = raw["MD5OfMessageAttributes"]
    record["md5OfBody"] = raw.get("MD5OfBody", "")
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = arn
    record["awsRegion"] = region
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # Lambda's spelling: camelCase, binary values base64, both list members always present.
    out: dict[str, Any] = {}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = _b64(value["BinaryValue"])
    out["stringListValues"] = list(value.get("StringListValues") or ())
    out["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or ()]
    out["dataType"] = value.get("DataType", "String")
    return out


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def batch_item_failures(
    response: Any, messages: Sequence[Message], *, fifo: bool = False
) -> set[str] | None:
    """The message ids a `ReportBatchItemFailures` response names as failed, read as Lambda
    reads it: no response, an empty object, or a missing, null or empty `batchItemFailures`
    is complete success (an empty set); anything that is not an object, a
    `batchItemFailures` that is not a list, or an item whose `itemIdentifier` is missing,
    null, empty or not a message of the batch fails the whole batch (None).

    `response` is the function's result, parsed or as the bytes it returned.

    For a FIFO queue, a failed message also fails every later message of its message group
    in the batch, whatever the function said of them: deleting those would let them
    overtake it. (AWS asks the function to report them itself; this makes it so.)
    """
    if isinstance(response, bytes | bytearray | str):
        if not response.strip():
            return set()
        try:
            response = json.loads(response)
        except ValueError:
            return None
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    items = response.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    known = {m.id for m in messages}
    failed: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            return None
        identifier = item.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier or identifier not in known:
            return None
        failed.add(identifier)
    if fifo and failed:
        stopped: set[str] = set()
        for m in messages:
            group = m.record.get("attributes", {}).get("MessageGroupId")
            if group in stopped:
                failed.add(m.id)
            elif m.id in failed:
                stopped.add(group)
    return failed
