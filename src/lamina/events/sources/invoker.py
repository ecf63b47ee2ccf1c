"""The `Invoker` of event-source mappings over the real scheduler, and their failure
destinations.

A mapping invokes its function synchronously (as Lambda's pollers do), through the same
scheduler as any other caller, so reserved and account concurrency, provisioned environments
and memory capacity apply unchanged: a mapping that finds no concurrency is throttled like any
caller, and its delivery rules back off and retry the same batch. Each batch resolves the
mapping's qualifier anew, so an alias's routing weights spread batches over its versions.

A failure destination (`DestinationConfig.OnFailure`) is a function, invoked asynchronously
through the async queue (stored before this returns, so the record is not lost), or an SQS
queue at the `--sqs-endpoint`, sent with botocore on a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lamina import ids, untrusted_json
from lamina.arns import parse_function_ref
from lamina.control import FunctionService
from lamina.errors import LaminaError, TooManyRequestsError
from lamina.events.async_queue import AsyncQueue
from lamina.events.sources.api import Outcome, SourceUnavailable
from lamina.mappings import EventSourceMapping, SourceKind, parse_source_arn
from lamina.models import FunctionState, InvokeRequest
from lamina.scheduler import Scheduler
from lamina.settings import Settings

log = logging.getLogger(__name__)


class SchedulerInvoker:
    """Runs mappings' functions on `scheduler`; see the module's docstring. `close()` stops
    the worker that talks to the SQS endpoint."""

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
        # The SQS branch adds `sqs_endpoint` to Settings; read it loosely until it lands.
        self._sqs_endpoint: str | None = getattr(settings, "sqs_endpoint", None)
        self._sqs_client: Any = None
        self._sqs_lock = threading.Lock()
        self._queue_urls: dict[str, str] = {}
        self._worker: ThreadPoolExecutor | None = None

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
        request = InvokeRequest(
            request_id=ids.request_id(),
            payload=json.dumps(event, separators=(",", ":")).encode(),
            invoked_arn=mapping.function_arn,
            trace_id=trace,
        )
        try:
            result = await self._scheduler.invoke(config, request)
        except TooManyRequestsError:
            return Outcome("throttled", error_type="TooManyRequestsException")
        except LaminaError as e:  # Lambda's 5xx for the invoke: retried as a throttle
            return Outcome("unavailable", error_type=e.error_type)
        if result.function_error is not None:
            error_type = _error_type(result.payload) or result.function_error
            return Outcome("function_error", result.payload, error_type)
        return Outcome("ok", result.payload)

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
            await self._to_queue(source.name, source.account, body)
            return
        raise SourceUnavailable(f"cannot deliver to the OnFailure destination {target}")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)

    # -- destinations ----------------------------------------------------------------------

    async def _to_function(self, target: str, payload: bytes) -> None:
        try:
            ref = parse_function_ref(
                target, region=self._settings.region, account=self._settings.account_id
            )
        except LaminaError as e:
            raise SourceUnavailable(f"OnFailure destination {target}: {e}") from None
        try:
            await self._async_queue.accept(ref.name, ref.qualifier, payload, ids.request_id())
        except OSError as e:
            raise SourceUnavailable(f"OnFailure destination {target}: {e}") from None

    async def _to_queue(self, name: str, account: str, body: str) -> None:
        if self._sqs_endpoint is None:
            raise SourceUnavailable(
                f"the OnFailure destination is the SQS queue {name}, and the server has no "
                "SQS endpoint (`lamina serve --sqs-endpoint URL`)"
            )
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lamina-sqs")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._send, name, account, body)

    def _sqs(self) -> Any:
        with self._sqs_lock:
            if self._sqs_client is None:
                import botocore.session
                from botocore.config import Config

                session = botocore.session.get_session()
                self._sqs_client = session.create_client(
                    "sqs",
                    endpoint_url=self._sqs_endpoint,
                    region_name=session.get_config_variable("region") or self._settings.region,
                    config=Config(
                        retries={"max_attempts": 2, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
            return self._sqs_client

    def _send(self, name: str, account: str, body: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = self._sqs()
            url = self._queue_urls.get(name)
            if url is None:
                found = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
                url = self._queue_urls[name] = found["QueueUrl"]
            client.send_message(QueueUrl=url, MessageBody=body)
        except (BotoCoreError, ClientError) as e:
            raise SourceUnavailable(f"OnFailure destination SQS queue {name}: {e}") from None


def _error_type(payload: bytes) -> str:
    try:
        value = untrusted_json.loads(payload)
    except ValueError:
        return ""
    return str(value.get("errorType", "")) if isinstance(value, dict) else ""
