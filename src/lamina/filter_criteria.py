"""Lambda's event filtering for event-source mappings (`FilterCriteria`).

Each filter is an EventBridge pattern (`event_patterns`); a record passes when any filter
matches it (the filters are OR-ed), and a mapping without filters passes everything. A
pattern is matched against the record's fields, with the payload field (`body` for SQS,
`data` for Amazon MQ / RabbitMQ and for streams, as Lambda names them) decoded: when the
payload is a JSON object it is matched as JSON, otherwise as the plain string. Lambda's rule
for records that fail every filter, which the delivery code applies: they are acknowledged
(deleted, checkpointed) and never reach the function.

Pure: no I/O. Used by `control/` to validate a mapping and by `events/sources/` to filter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina import event_patterns, untrusted_json
from lamina.errors import InvalidParameterValueError

#: Lambda's default quota of filters per mapping, and the longest pattern it accepts
MAX_FILTERS = 5
MAX_PATTERN_LENGTH = 4096
_INVALID = "Invalid filter pattern definition."


@dataclass(frozen=True)
class FilterSet:
    """Compiled filters of one mapping."""

    patterns: tuple[event_patterns.Pattern, ...] = ()

    def accepts(self, fields: Mapping[str, Any], payload_key: str, payload: bytes) -> bool:
        """Whether a record with these fields (its payload under `payload_key`, raw bytes)
        passes the filters."""
        if not self.patterns:
            return True
        record = dict(fields)
        record[payload_key] = decode_payload(payload)
        return any(event_patterns.matches(p, record) for p in self.patterns)


def decode_payload(payload: bytes) -> Any:
    """The payload as a filter sees it: decoded JSON if it is JSON, else its text."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")
    try:
        return untrusted_json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return text


def compile_filters(patterns: Sequence[str]) -> FilterSet:
    """Validate and compile; raises InvalidParameterValueError as Lambda does for a pattern
    that is not valid, too long, or one filter too many."""
    if len(patterns) > MAX_FILTERS:
        raise InvalidParameterValueError(
            f"The number of filters exceeds the limit of {MAX_FILTERS} for this event source."
        )
    compiled = []
    for text in patterns:
        if not isinstance(text, str) or len(text) > MAX_PATTERN_LENGTH:
            raise InvalidParameterValueError(_INVALID)
        try:
            compiled.append(event_patterns.compile(text))
        except event_patterns.InvalidEventPatternError as e:
            raise InvalidParameterValueError(f"{_INVALID} {e.reason}") from None
    return FilterSet(tuple(compiled))
