"""AWS event-stream framing of InvokeWithResponseStream, read back by botocore's own parser."""

from __future__ import annotations

import json
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from lamina.api import eventstream


def _messages(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buf = EventStreamBuffer()
    buf.add_data(data)
    return [(m.headers, m.payload) for m in buf]


def test_payload_chunks_and_completion_parse() -> None:
    data = (
        eventstream.payload_chunk(b"\x00binary\xff")
        + eventstream.payload_chunk(b"")
        + eventstream.invoke_complete("TypeError", '{"errorMessage":"x"}', "bG9n")
    )
    (h1, p1), (_h2, p2), (h3, p3) = _messages(data)
    assert h1 == {
        ":event-type": "PayloadChunk",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert p1 == b"\x00binary\xff" and p2 == b""
    assert h3[":event-type"] == "InvokeComplete"
    assert json.loads(p3) == {
        "ErrorCode": "TypeError",
        "ErrorDetails": '{"errorMessage":"x"}',
        "LogResult": "bG9n",
    }
    assert json.loads(_messages(eventstream.invoke_complete())[0][1]) == {}


def test_crcs_are_checked() -> None:
    frame = bytearray(eventstream.payload_chunk(b"abc"))
    frame[-5] ^= 1  # the payload's last byte: the message CRC no longer matches
    with pytest.raises(ChecksumMismatch):
        _messages(bytes(frame))
    prelude = bytes(frame[:8])
    assert int.from_bytes(frame[8:12], "big") == zlib.crc32(prelude)
