"""CloudWatch Logs filter patterns: which log events a pattern matches. The text kind is
here; JSON patterns (`{ $.level = "ERROR" }`) are `json_filter`'s, and `parse` hands them on.

A pattern is a list of terms separated by whitespace. A plain term must appear in the message,
a `-term` must not, and of the `?term`s at least one must (when there are any). A term in
double quotes is one term even with spaces or punctuation in it (`"Task timed out"`);
inside quotes a backslash escapes `"` and `\\`. Matching is by substring and case-sensitive,
as CloudWatch's is. The empty pattern matches every event.

Mixing plain terms with `?` terms is not defined by CloudWatch's documentation; here the plain
terms are all required and the `?` terms form one OR-group on top of them — the reading that
never returns an event a plain term rules out.

Space-delimited patterns (`[ip, user, ...]`) and regular expressions (`%...%`) are refused as
not supported yet rather than read as text, so that
a pattern written for CloudWatch never silently matches something else here. Regular
expressions stay out on purpose until they can run with a bound on time (a pattern comes from
the caller, and matching runs in the server).

This module knows nothing of HTTP: a malformed pattern raises `FilterPatternError`, which the
Logs API reports as InvalidParameterException.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FilterPattern", "FilterPatternError", "Matcher", "parse"]


class FilterPatternError(ValueError):
    """The pattern is malformed, or of a kind not supported yet; the message says which."""


class Matcher(Protocol):
    """What a parsed pattern of either kind offers."""

    @property
    def matches_everything(self) -> bool: ...

    def matches(self, message: str) -> bool: ...


@dataclass(frozen=True)
class FilterPattern:
    """A parsed text pattern. `matches` is all the caller needs."""

    required: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    @property
    def matches_everything(self) -> bool:
        """True for the empty pattern: callers can skip matching altogether."""
        return not (self.required or self.excluded or self.any_of)

    def matches(self, message: str) -> bool:
        if any(term not in message for term in self.required):
            return False
        if any(term in message for term in self.excluded):
            return False
        return not self.any_of or any(term in message for term in self.any_of)


def parse(pattern: str) -> Matcher:
    """Parse a filter pattern, text or JSON; raise `FilterPatternError` if it is malformed or
    of a kind (space-delimited, regular expression) not supported yet."""
    stripped = pattern.strip()
    if stripped.startswith("{"):
        # Imported here: json_filter raises this module's FilterPatternError.
        from lamina.observability import json_filter

        return json_filter.parse(stripped)
    if stripped.startswith("["):
        raise FilterPatternError(
            "space-delimited filter patterns ([a, b, ...]) are not supported yet"
        )
    required: list[str] = []
    excluded: list[str] = []
    any_of: list[str] = []
    for sign, term, quoted in _tokens(stripped):
        if not quoted and len(term) >= 2 and term.startswith("%") and term.endswith("%"):
            raise FilterPatternError(
                f"regular expressions in filter patterns ({term}) are not supported yet"
            )
        if not term:
            if quoted:
                continue  # "" appears in every message: it constrains nothing
            raise FilterPatternError(f"'{sign}' must be followed by a term")
        {"": required, "-": excluded, "?": any_of}[sign].append(term)
    return FilterPattern(tuple(required), tuple(excluded), tuple(any_of))


def _tokens(pattern: str) -> list[tuple[str, str, bool]]:
    """Split into (sign, term, quoted) with sign one of "", "-", "?"."""
    out: list[tuple[str, str, bool]] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i].isspace():
            i += 1
            continue
        sign = ""
        if pattern[i] in "-?":
            sign = pattern[i]
            i += 1
        if i < n and pattern[i] == '"':
            term, i = _quoted(pattern, i)
            out.append((sign, term, True))
            continue
        start = i
        while i < n and not pattern[i].isspace():
            if pattern[i] == '"':
                raise FilterPatternError(
                    f"a quote inside a term at position {i + 1}; quote the whole term"
                )
            i += 1
        out.append((sign, pattern[start:i], False))
    return out


def _quoted(pattern: str, i: int) -> tuple[str, int]:
    """The phrase starting at the quote at `i`, and the index after its closing quote."""
    chars: list[str] = []
    j, n = i + 1, len(pattern)
    while j < n:
        c = pattern[j]
        if c == "\\" and j + 1 < n and pattern[j + 1] in '"\\':
            chars.append(pattern[j + 1])
            j += 2
            continue
        if c == '"':
            if j + 1 < n and not pattern[j + 1].isspace():
                raise FilterPatternError(
                    f"the quoted phrase ending at position {j + 1} runs into the next term"
                )
            return "".join(chars), j + 1
        chars.append(c)
        j += 1
    raise FilterPatternError(f"unbalanced quote: the phrase at position {i + 1} is not closed")
