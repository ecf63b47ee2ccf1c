"""AWS event-stream framing (`application/vnd.amazon.eventstream`), the encoding of
InvokeWithResponseStream's response.

One message is: a prelude (total length, headers length: both 4-byte big-endian) and its
CRC32; the headers; the payload; the CRC32 of everything before it. A header is its name's
length (1 byte), the name, a type byte (7: a string) and the string's length (2 bytes) and
bytes. Each event carries `:message-type` event, `:event-type` (the member of the model's
event-stream union) and `:content-type`.
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _header(name: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name + bytes((_STRING,)) + struct.pack(">H", len(value)) + value


def message(headers: bytes, payload: bytes) -> bytes:
    """One event-stream message of already encoded `headers` and `payload`."""
    prelude = _PRELUDE.pack(16 + len(headers) + len(payload), len(headers))
    head = prelude + _CRC.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(headers, zlib.crc32(head)))
    return head + headers + payload + _CRC.pack(crc)


def _event_headers(event_type: bytes, content_type: bytes) -> bytes:
    return (
        _header(b":event-type", event_type)
        + _header(b":content-type", content_type)
        + _header(b":message-type", b"event")
    )


_CHUNK_HEADERS = _event_headers(b"PayloadChunk", b"application/octet-stream")
_COMPLETE_HEADERS = _event_headers(b"InvokeComplete", b"application/json")


def payload_chunk(data: bytes) -> bytes:
    """A `PayloadChunk` event carrying `data` (the event's payload member)."""
    return message(_CHUNK_HEADERS, data)


def invoke_complete(
    error_code: str | None = None, error_details: str | None = None, log_result: str | None = None
) -> bytes:
    """The `InvokeComplete` event that ends the stream."""
    body: dict[str, str] = {}
    if error_code is not None:
        body["ErrorCode"] = error_code
    if error_details is not None:
        body["ErrorDetails"] = error_details
    if log_result is not None:
        body["LogResult"] = log_result
    return message(_COMPLETE_HEADERS, json.dumps(body).encode())
