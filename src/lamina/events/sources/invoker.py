"""The `Invoker` of event-source mappings over the real scheduler, and their failure
destinations.

A mapping invokes its function synchronously (as Lambda's pollers do), through the same
scheduler as any other caller, so reserved and account concurrency, provisioned environments
and memory capacity apply unchanged: a mapping that finds no concurrency is throttled like any
caller, and its delivery rules back off and retry the same batch. Each batch resolves the
mapping's qualifier anew, so an alias's routing weights spread batches over its versions.

A failure destination (`DestinationConfig.OnFailure`) is a function, invoked asynchronously
through the async queue (stored before this returns, so the record is not lost), or an SQS
queue at the `--sqs-endpoint`, sent with the SQS sources' asyncio client.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from lamina import ids, untrusted_json
from lamina.arns import parse_function_ref
from lamina.control import FunctionService
from lamina.errors import LaminaError, TooManyRequestsError
from lamina.events.async_queue import AsyncQueue, DurableStart
from lamina.events.sources.api import Outcome, SourceUnavailable
from lamina.mappings import EventSourceMapping, SourceKind, parse_source_arn
from lamina.models import FunctionState, InvokeRequest
from lamina.scheduler import Scheduler
from lamina.settings import Settings

if TYPE_CHECKING:
    # Imported when first needed (an SQS OnFailure destination): it loads httpx.
    from lamina.events.sources.sqs_client import SqsClient

log = logging.getLogger(__name__)

#: links one invocation's span carries at most (OpenTelemetry SDKs' default span link limit)
MAX_TRACE_LINKS = 128


class SchedulerInvoker:
    """Runs mappings' functions on `scheduler`; see the module's docstring. `close()` closes
    the connections to the SQS endpoint."""

    def __init__(
        self,
        settings: Settings,
        functions: FunctionService,
        scheduler: Scheduler,
        async_queue: AsyncQueue,
    ) -> None:
        self._settings = settings
        self._functions = functions
        self._scheduler = scheduler
        self._async_queue = async_queue
        #: how a batch for a durable function runs: its execution, to its end
        #: (`events.durable`); None: invoked like any other function
        self.start_durable: DurableStart | None = None
        self._sqs_endpoint = settings.sqs_endpoint
        #: a client per region (requests are signed for the queue's region)
        self._sqs: dict[str, SqsClient] = {}
        self._queue_urls: dict[tuple[str, str, str], str] = {}

    async def invoke(self, mapping: EventSourceMapping, event: dict[str, Any]) -> Outcome:
        """One synchronous invocation with `event`; see `Outcome` for what comes back."""
        try:
            config = self._functions.resolve(
                self._functions.ref(mapping.function_name, mapping.qualifier)
            )
        except LaminaError as e:  # deleted meanwhile: its mappings go with it
            return Outcome("unavailable", error_type=e.error_type)
        if config.state is not FunctionState.ACTIVE:
            return Outcome("unavailable", error_type=f"function state {config.state}")
        trace, _ = self._functions.recursion.trace(mapping.function_name, None)
        upstream = upstream_traces(event)
        if any("Sampled=1" in header for header in upstream):
            # A producer's sampled trace: the consumer's linked trace is kept too.
            trace = trace.replace("Sampled=0", "Sampled=1", 1)
        request = InvokeRequest(
            request_id=ids.request_id(),
            payload=json.dumps(event, separators=(",", ":")).encode(),
            invoked_arn=mapping.function_arn,
            trace_id=trace,
            source="EventSource",
            trace_links=upstream,
        )
        invoke: DurableStart = self._scheduler.invoke
        if config.durable is not None and self.start_durable is not None:
            invoke = self.start_durable
        try:
            result = await invoke(config, request)
        except TooManyRequestsError:
            return Outcome("throttled", error_type="TooManyRequestsException")
        except LaminaError as e:  # Lambda's 5xx for the invoke: retried as a throttle
            return Outcome("unavailable", error_type=e.error_type)
        version = result.executed_version
        if result.function_error is not None:
            error_type = _error_type(result.payload) or result.function_error
            return Outcome("function_error", result.payload, error_type, version)
        return Outcome("ok", result.payload, executed_version=version)

    async def send_to_failure_destination(
        self, mapping: EventSourceMapping, record: dict[str, Any]
    ) -> None:
        """Deliver `record` to `mapping.on_failure`; `SourceUnavailable` if it cannot be."""
        target = mapping.on_failure
        if not target:
            raise SourceUnavailable("the mapping has no OnFailure destination")
        body = json.dumps(record, separators=(",", ":"))
        if target.startswith("arn:aws:lambda:"):
            await self._to_function(target, body.encode())
            return
        source = parse_source_arn(target)
        if source is not None and source.kind is SourceKind.SQS and source.name is not None:
            await self._to_queue(source.name, source.region, source.account, body)
            return
        raise SourceUnavailable(f"cannot deliver to the OnFailure destination {target}")

    async def close(self) -> None:
        """Close the SQS clients (a second call does nothing)."""
        clients, self._sqs = list(self._sqs.values()), {}
        for client in clients:
            await client.close()

    # -- destinations ----------------------------------------------------------------------

    async def _to_function(self, target: str, payload: bytes) -> None:
        try:
            ref = parse_function_ref(
                target, region=self._settings.region, account=self._settings.account_id
            )
            # A function deleted since it was configured: its record would only be dropped.
            self._functions.resolve(ref)
        except LaminaError as e:
            raise SourceUnavailable(f"OnFailure destination {target}: {e}") from None
        try:
            await self._async_queue.accept(ref.name, ref.qualifier, payload, ids.request_id())
        except OSError as e:
            raise SourceUnavailable(f"OnFailure destination {target}: {e}") from None

    async def _to_queue(self, name: str, region: str, account: str, body: str) -> None:
        if self._sqs_endpoint is None:
            raise SourceUnavailable(
                f"the OnFailure destination is the SQS queue {name}, and the server has no "
                "SQS endpoint (`lamina serve --sqs-endpoint URL`)"
            )
        from lamina.events.sources.sqs_client import SqsApiError, SqsClient, SqsUnreachable

        try:
            client = self._sqs.get(region)
            if client is None:
                client = self._sqs[region] = SqsClient(self._sqs_endpoint, region)
            await client.open()
            url = self._queue_urls.get((region, account, name))
            if url is None:
                found = await client.call(
                    "GetQueueUrl", {"QueueName": name, "QueueOwnerAWSAccountId": account}
                )
                url = self._queue_urls[(region, account, name)] = found["QueueUrl"]
            await client.call("SendMessage", {"QueueUrl": url, "MessageBody": body})
        except (SqsApiError, SqsUnreachable) as e:
            raise SourceUnavailable(f"OnFailure destination SQS queue {name}: {e}") from None


def upstream_traces(event: dict[str, Any]) -> tuple[str, ...]:
    """The distinct X-Ray headers a batch's records arrived with (an SQS message's
    `AWSTraceHeader` system attribute), in record order, at most `MAX_TRACE_LINKS`."""
    records = event.get("Records")
    if not isinstance(records, list):
        return ()
    seen: dict[str, None] = {}
    for record in records:
        attributes = record.get("attributes") if isinstance(record, dict) else None
        header = attributes.get("AWSTraceHeader") if isinstance(attributes, dict) else None
        if isinstance(header, str) and header:
            seen[header] = None
            if len(seen) == MAX_TRACE_LINKS:
                break
    return tuple(seen)


def _error_type(payload: bytes) -> str:
    try:
        value = untrusted_json.loads(payload)
    except ValueError:
        return ""
    return str(value.get("errorType", "")) if isinstance(value, dict) else ""
