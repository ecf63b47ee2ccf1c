"""`POST /v1/traces`: an OTLP/HTTP receiver for functions' own spans, forwarded unchanged
(JSON or protobuf, as sent) to `--otlp-endpoint`.

A function in a namespace sandbox reaches no address of the host but Lamina's API (its
`AWS_ENDPOINT_URL`, through the sandbox's relay), so its OpenTelemetry SDK is pointed here
(`OTEL_EXPORTER_OTLP_ENDPOINT`). OTLP exporters do not sign with SigV4: each function is
given a token (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, an HMAC of its name under a key the server
makes at start) and only a request carrying a valid one is forwarded. The token lets its
holder post spans, nothing else; it ends with the server process.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.errors import (
    AccessDeniedError,
    InvalidRequestContentError,
    RequestTooLargeError,
    ResourceNotFoundError,
)
from lamina.scheduler.traces import TOKEN_HEADER

#: bytes one export request may carry (OTel SDKs batch 512 spans: well under this)
MAX_BODY = 4 * 1024 * 1024
_TYPES = ("application/json", "application/x-protobuf")


async def receive_traces(request: Request) -> Response:
    """Forward one OTLP export request; the collector's status is the answer's."""
    tracing = app_state(request).scheduler.tracing
    if tracing is None:
        raise ResourceNotFoundError(
            "Lamina forwards functions' spans only when started with --otlp-endpoint."
        )
    function = tracing.check(request.headers.get(TOKEN_HEADER, ""))
    if function is None:
        raise AccessDeniedError(
            f"POST /v1/traces needs the {TOKEN_HEADER} header Lamina gives each function "
            "(OTEL_EXPORTER_OTLP_TRACES_HEADERS)."
        )
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _TYPES:
        raise InvalidRequestContentError(
            f"OTLP/HTTP takes {' or '.join(_TYPES)}, not {content_type or 'no content type'}."
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise RequestTooLargeError(f"An OTLP request may carry at most {MAX_BODY} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RequestTooLargeError(f"An OTLP request may carry at most {MAX_BODY} bytes.")
    status = await tracing.exporter.forward(body, content_type)
    # An empty ExportTraceServiceResponse: `{}` in JSON, zero bytes in protobuf.
    return Response(
        b"{}" if content_type == "application/json" else b"",
        status_code=status if status < 500 else 502,
        media_type=content_type,
    )
