"""An asyncio client for an SQS-API endpoint: botocore's `sqs` model, serializer, response
parser and SigV4 signer, with httpx carrying the requests.

Why not a botocore client on worker threads: an SQS poller spends its life in long polls
(ReceiveMessage waiting up to 20 s). On threads, each concurrent poller pins a worker for
the whole wait, and a poll cannot be interrupted, so stopping a mapping either waits up to
20 s per poll or abandons threads that go on leasing messages nobody will process (they then
stay invisible for the queue's visibility timeout). Here a poll is an awaitable request:
cancelling it closes its connection at once, a thousand polls cost a thousand sockets rather
than a thousand threads, and `close()` leaves nothing running. Only the blocking parts of
botocore (reading its JSON model, resolving or refreshing credentials, which may call STS or
an instance metadata service) run on a worker thread.

The wire protocol is whatever botocore's model says (JSON for current SQS, the query
protocol for old models): the serializer and parser are chosen from it, so requests are
byte-for-byte what boto3 would send.
"""

from __future__ import annotations

import asyncio
import html
import logging
import random
import re
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: error codes worth another attempt (the endpoint is busy, not refusing)
_RETRYABLE = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestThrottled",
        "ThrottlingException",
        "Throttling",
        "RequestTimeout",
    }
)
_ATTEMPTS = 3


class SqsApiError(Exception):
    """The endpoint answered with an error (`code` as botocore names it, e.g.
    `AWS.SimpleQueueService.NonExistentQueue` or `QueueDoesNotExist`)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class SqsUnreachable(Exception):
    """No answer from the endpoint (refused, reset, timed out), or no credentials to sign
    with; `str()` says which."""


class SqsClient:
    """Calls SQS operations on one endpoint, signed for one region. `open()` before the first
    call; calls may then run concurrently. `close()` cancels nothing by itself (the caller
    cancels its calls) but closes the connections; a second `close()` does nothing."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        connect_timeout: float = 5.0,
        attempts: int = _ATTEMPTS,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self._connect_timeout = connect_timeout
        self._attempts = max(1, attempts)
        self._http: httpx.AsyncClient | None = None
        self._model: Any = None
        self._serializer: Any = None
        self._parser: Any = None
        self._credentials: Any = None

    async def open(self) -> None:
        """Load the model and find credentials (on a worker thread: both block)."""
        if self._http is not None:
            return
        self._model, self._serializer, self._parser, self._credentials = await asyncio.to_thread(
            _load
        )
        if self._credentials is None:
            raise SqsUnreachable(
                "Lamina found no AWS credentials for its SQS endpoint: give the server some "
                "through the usual AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE and the shared credentials file)"
            )
        # No connection cap: the runner bounds how many polls run at once
        # (MaximumConcurrency), and a cap here would turn a long poll into a pool timeout.
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            timeout=httpx.Timeout(30.0, connect=self._connect_timeout),
        )

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def call(
        self, operation: str, params: dict[str, Any], *, read_timeout: float = 30.0
    ) -> Any:
        """The parsed response of `operation` (botocore's output shape, without
        `ResponseMetadata`). Throttling, server errors and dropped connections are tried again
        (three attempts in all, unless the client was made with fewer); then, or for any
        other error, raises `SqsApiError` or `SqsUnreachable`."""
        if self._http is None:
            raise SqsUnreachable("the SQS client is closed")
        op = self._model.operation_model(operation)
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._once(op, params, read_timeout)
            except SqsApiError as e:
                if attempt == self._attempts or (e.code not in _RETRYABLE and e.status < 500):
                    raise
                log.debug("SQS %s failed (%s), trying again", operation, e)
            except SqsUnreachable:
                if attempt == self._attempts:
                    raise
            # Jittered exponential back-off, as botocore's standard retry mode does.
            await asyncio.sleep(random.uniform(0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, op: Any, params: dict[str, Any], read_timeout: float) -> Any:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import create_request_object, prepare_request_dict

        assert self._http is not None
        request_dict = self._serializer.serialize_to_request(params, op)
        prepare_request_dict(request_dict, endpoint_url=self.endpoint, user_agent="lamina")
        request = create_request_object(request_dict)
        SigV4Auth(await self._frozen_credentials(), "sqs", self.region).add_auth(request)
        try:
            response = await self._http.request(
                request.method,
                request.url,
                headers=dict(request.headers.items()),
                content=request.body,
                timeout=httpx.Timeout(read_timeout, connect=self._connect_timeout),
            )
        except httpx.HTTPError as e:
            raise SqsUnreachable(
                f"cannot reach the SQS endpoint {self.endpoint}: {_describe(e)}"
            ) from e
        parsed = self._parser.parse(
            {
                "headers": dict(response.headers.items()),
                "status_code": response.status_code,
                "body": response.content,
                "context": {"operation_name": op.name},
            },
            op.output_shape,
        )
        if response.status_code >= 300:
            error = parsed.get("Error", {})
            code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
            if not code or code == str(response.status_code):
                # Not in the model's protocol: some SQS-compatible servers (and gateways in
                # front of them) answer authentication errors in the query protocol's XML.
                code, message = _xml_error(response.content) or (code, message)
            raise SqsApiError(code or str(response.status_code), message, response.status_code)
        parsed.pop("ResponseMetadata", None)
        return parsed

    async def _frozen_credentials(self) -> Any:
        from botocore.credentials import RefreshableCredentials

        creds = self._credentials
        if isinstance(creds, RefreshableCredentials) and creds.refresh_needed():
            # Refreshing calls out (STS, IMDS, a credential process): not on the loop.
            return await asyncio.to_thread(creds.get_frozen_credentials)
        return creds.get_frozen_credentials()


def _load() -> tuple[Any, Any, Any, Any]:
    import botocore.session
    from botocore.parsers import create_parser
    from botocore.serialize import create_serializer

    session = botocore.session.get_session()
    model = session.get_service_model("sqs")
    protocol = model.protocol
    return (
        model,
        create_serializer(protocol, include_validation=True),
        create_parser(protocol),
        session.get_credentials(),
    )


def _xml_error(body: bytes) -> tuple[str, str] | None:
    """`<Code>` and `<Message>` of an XML error document (read with a pattern, not an XML
    parser: the body comes from the network and only two plain elements are wanted)."""
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,200})</Code>", text)
    if code is None:
        return None
    message = re.search(r"<Message>([^<]{0,2000})</Message>", text)
    return html.unescape(code[1].strip()), html.unescape(message[1].strip()) if message else ""


def _describe(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.ConnectError):
        return f"connection failed ({e or 'refused'})"
    if isinstance(e, httpx.TimeoutException):
        return "no answer in time"
    return str(e) or type(e).__name__
