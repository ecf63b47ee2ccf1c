"""The CloudWatch API's three wire protocols, driven by botocore's model of the service.

botocore lists `smithy-rpc-v2-cbor` (its default now), `json` (1.0) and `query` for the
`monitoring` service; every one is served on Lamina's port:

- RPC v2 CBOR: `POST /service/GraniteServiceVersion20100801/operation/<Op>` with
  `smithy-protocol: rpc-v2-cbor`, CBOR both ways; timestamps are CBOR tag 1 (epoch seconds).
- JSON 1.0: `POST /`, `X-Amz-Target: GraniteServiceVersion20100801.<Op>`; epoch seconds.
- query: `POST /`, form-encoded `Action=<Op>&Version=2010-08-01&...`, flattened members
  (`Dimensions.member.1.Name`); XML responses and errors; ISO 8601 timestamps.

Requests decode to the operation's members with timestamps as aware datetimes; responses
encode from the same. Errors carry the query error code (`InvalidParameterValue`) in every
protocol: JSON and CBOR name the modelled shape in `__type` and the code in
`x-amzn-query-error` (the service is `awsQueryCompatible`), as CloudWatch does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qs, parse_qsl
from xml.sax.saxutils import escape

import botocore.session
import cbor2
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape
from starlette.responses import Response

from lamina import ids, untrusted_json

TARGET_PREFIX = "GraniteServiceVersion20100801."
CBOR_PATH = "/service/GraniteServiceVersion20100801/operation/"
XML_NAMESPACE = "http://monitoring.amazonaws.com/doc/2010-08-01/"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

CBOR, JSON, QUERY = "cbor", "json", "query"
#: the largest request body taken (CloudWatch's limit for an HTTP POST request: 1 MB)
MAX_BODY = 1024 * 1024


class WireError(Exception):
    """A request that cannot be decoded: answered with `code` (a query error code)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@cache
def model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("cloudwatch")


@cache
def _error_shapes() -> dict[str, str]:
    """Query error code -> the modelled error shape's name."""
    out: dict[str, str] = {}
    for shape in model().error_shapes:
        out[str(shape.metadata.get("error", {}).get("code", shape.name))] = shape.name
    return out


def protocol_of(method: str, path: str, headers: Mapping[str, str]) -> str | None:
    """Which CloudWatch protocol a request speaks (`headers`: lower-case names), or None if
    it is not addressed to CloudWatch."""
    if method != "POST":
        return None
    if path.startswith(CBOR_PATH):
        return CBOR
    if path != "/":
        return None
    target = headers.get("x-amz-target")
    if target is not None:
        return JSON if target.startswith(TARGET_PREFIX) else None
    if headers.get("content-type", "").split(";")[0].strip().lower() == FORM_CONTENT_TYPE:
        return QUERY
    return None


def action(protocol: str, path: str, headers: Mapping[str, str], body: bytes | None) -> str:
    """The operation a request names ("" if none): in the path (CBOR), X-Amz-Target (JSON)
    or the form's `Action` (query)."""
    if protocol == CBOR:
        return path.removeprefix(CBOR_PATH)
    if protocol == JSON:
        return headers.get("x-amz-target", "").removeprefix(TARGET_PREFIX)
    form = parse_qs((body or b"").decode("utf-8", "replace"))
    return form.get("Action", [""])[0]


def operation(name: str) -> OperationModel:
    if name not in model().operation_names:
        raise WireError("InvalidAction", f"Could not find operation {name} for version 2010-08-01.")
    return model().operation_model(name)


# -- decoding ------------------------------------------------------------------------------


def decode(protocol: str, op: OperationModel, body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise WireError(
            "RequestEntityTooLarge", f"Request size must be at most {MAX_BODY} bytes.", 413
        )
    shape = op.input_shape
    if protocol == QUERY:
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as e:
            raise WireError("MalformedQueryString", "The body is not UTF-8.") from e
        if shape is None:
            return {}
        # every dotted prefix of the keys: whether a structure is present is a look-up
        prefixes = {k[: i + 1] for k in form for i, c in enumerate(k) if c == "."}
        return _from_form(shape, _Form(form, prefixes), "")
    if not body:
        data: Any = {}
    elif protocol == CBOR:
        try:
            data = cbor2.loads(body)
        except Exception as e:  # cbor2 raises several kinds for bad input
            raise WireError("SerializationException", f"The body is not CBOR: {e}") from e
    else:
        try:
            data = untrusted_json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise WireError("SerializationException", f"The body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise WireError("SerializationException", "The body must be an object.")
    if shape is None:
        return {}
    out = _from_data(shape, data)
    assert isinstance(out, dict)
    return out


def _from_data(shape: Shape, value: Any) -> Any:
    """JSON/CBOR data: timestamps made datetimes, unknown members dropped."""
    if value is None:
        return None
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return value
        return {
            k: _from_data(shape.members[k], v)
            for k, v in value.items()
            if k in shape.members and v is not None
        }
    if isinstance(shape, ListShape):
        return [_from_data(shape.member, v) for v in value] if isinstance(value, list) else value
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return value
        return {k: _from_data(shape.value, v) for k, v in value.items()}
    if shape.type_name == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and math.isfinite(value) and abs(value) < 1e11:
            return datetime.fromtimestamp(value, UTC)
    return value


class _Form(dict[str, str]):
    def __init__(self, form: dict[str, str], prefixes: set[str]) -> None:
        super().__init__(form)
        self.prefixes = prefixes


def _from_form(shape: StructureShape, form: _Form, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in shape.members.items():
        key = prefix + member.serialization.get("name", name)
        value = _form_value(member, form, key)
        if value is not None:
            out[name] = value
    return out


def _form_value(shape: Shape, form: _Form, key: str) -> Any:
    if isinstance(shape, StructureShape):
        if key + "." not in form.prefixes:
            return None
        return _from_form(shape, form, key + ".")
    if isinstance(shape, ListShape):
        items = []
        if key in form and form[key] == "":
            return []
        i = 1
        while True:
            item = _form_value(shape.member, form, f"{key}.member.{i}")
            if item is None:
                break
            items.append(item)
            i += 1
        return items or None
    if isinstance(shape, MapShape):
        result: dict[str, Any] = {}
        i = 1
        while f"{key}.entry.{i}.key" in form:
            result[form[f"{key}.entry.{i}.key"]] = _form_value(
                shape.value, form, f"{key}.entry.{i}.value"
            )
            i += 1
        return result or None
    raw = form.get(key)
    if raw is None:
        return None
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("double", "float"):
            return float(raw)
    except ValueError as e:
        raise WireError("InvalidParameterValue", f"The parameter {key} is not a number.") from e
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise WireError("InvalidParameterValue", f"The parameter {key} is not a boolean.")
        return raw.lower() == "true"
    if kind == "timestamp":
        try:
            t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as e:
            raise WireError(
                "InvalidParameterValue", f"The parameter {key} is not an ISO 8601 timestamp."
            ) from e
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return raw


# -- encoding ------------------------------------------------------------------------------


def respond(protocol: str, op: OperationModel, result: dict[str, Any]) -> Response:
    request_id = ids.request_id()
    headers = {"x-amzn-RequestId": request_id}
    if protocol == QUERY:
        name = op.name
        inner = _xml(op.output_shape, result) if op.output_shape is not None else ""
        body = (
            f'<{name}Response xmlns="{XML_NAMESPACE}"><{name}Result>{inner}</{name}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{name}Response>"
        )
        return Response(body, media_type="text/xml", headers=headers)
    if protocol == CBOR:
        headers["smithy-protocol"] = "rpc-v2-cbor"
        data = cbor2.dumps(result, datetime_as_timestamp=True, timezone=UTC)
        return Response(data, media_type="application/cbor", headers=headers)
    import json

    return Response(
        json.dumps(_to_json(result), separators=(",", ":")),
        media_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _xml(shape: Shape, value: Any) -> str:
    if isinstance(shape, StructureShape):
        parts = []
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                tag = member.serialization.get("name", name)
                parts.append(f"<{tag}>{_xml(member, value[name])}</{tag}>")
        return "".join(parts)
    if isinstance(shape, ListShape):
        return "".join(f"<member>{_xml(shape.member, v)}</member>" for v in value)
    if isinstance(shape, MapShape):
        return "".join(
            f"<entry><key>{escape(str(k))}</key><value>{_xml(shape.value, v)}</value></entry>"
            for k, v in value.items()
        )
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("NaN" if math.isnan(value) else "0")
    return escape(str(value))


def error(protocol: str, code: str, message: str, status: int = 400) -> Response:
    """An error in the caller's protocol; `code` is the query error code."""
    request_id = ids.request_id()
    fault = "Sender" if status < 500 else "Receiver"
    if protocol == QUERY:
        body = (
            f'<ErrorResponse xmlns="{XML_NAMESPACE}"><Error><Type>{fault}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return Response(
            body,
            status_code=status,
            media_type="text/xml",
            headers={"x-amzn-RequestId": request_id},
        )
    shape = _error_shapes().get(code, code)
    headers: dict[str, str] = {
        "x-amzn-RequestId": request_id,
        "x-amzn-query-error": f"{code};{fault}",
    }
    data = {"__type": shape, "message": message}
    if protocol == CBOR:
        headers["smithy-protocol"] = "rpc-v2-cbor"
        return Response(
            cbor2.dumps(data), status_code=status, media_type="application/cbor", headers=headers
        )
    import json

    headers["x-amzn-ErrorType"] = shape
    return Response(
        json.dumps(data), status_code=status, media_type=JSON_CONTENT_TYPE, headers=headers
    )
