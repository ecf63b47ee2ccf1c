"""CloudWatch Logs filter patterns, the JSON kind: `{ $.level = "ERROR" && $.latency > 200 }`.

A pattern is a boolean expression in braces over the log event read as a JSON object:

- comparisons `SELECTOR OP VALUE` with OP one of `=`, `!=` (strings, with `*` as a wildcard
  matching any run of characters; numbers) and `<`, `<=`, `>`, `>=` (numbers);
- `SELECTOR IS TRUE`, `IS FALSE`, `IS NULL`, and `SELECTOR NOT EXISTS`;
- `&&` (binds tighter), `||`, and parentheses.

A selector starts at `$` and steps into members (`.name`) and array elements (`[0]`). A
comparison with a selector that names nothing is false (only `NOT EXISTS` is true then), and
an event that is not a JSON object matches no JSON pattern, as in CloudWatch. Values may be
quoted (`"a b"`, with `\\"` and `\\\\` escapes) or bare (`ERROR`, `200`, `-1.5`); a bare
number compares as a number with a numeric field and as text with a string field.

Parsing is a small recursive descent over tokens; matching walks the parsed tree once per
event (no regular expressions built from the caller's text, so no pathological patterns).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina import untrusted_json
from lamina.observability.filter_pattern import FilterPatternError

__all__ = ["JsonPattern", "parse"]

_MISSING = object()
#: how deep parentheses may nest in a JSON filter pattern (Lamina's bound; CloudWatch states
#: none, and its patterns are at most 1,024 characters)
MAX_PARENTHESES = 50
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\)|\{|\})
      | (?P<quoted>"(?:[^"\\]|\\.)*")
      | (?P<word>[^\s()&|{}<>=!"]+)
    )""",
    re.VERBOSE,
)
_SELECTOR = re.compile(r"\$((?:\.[A-Za-z0-9_@:-]+|\[\d+\])*)")
_STEP = re.compile(r"\.([A-Za-z0-9_@:-]+)|\[(\d+)\]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

Test = Callable[[Any], bool]


@dataclass(frozen=True)
class JsonPattern:
    """A parsed JSON filter pattern; `matches` is all a caller needs."""

    text: str
    _test: Test

    @property
    def matches_everything(self) -> bool:
        return False

    def matches(self, message: str) -> bool:
        if not message.startswith("{"):
            return False
        try:
            value = untrusted_json.loads(message)
        except ValueError:  # not JSON, or nested too deep to be a record worth matching
            return False
        return isinstance(value, dict) and self._test(value)


def parse(pattern: str) -> JsonPattern:
    """Parse `{ ... }`; raise `FilterPatternError` naming what is wrong."""
    tokens = _tokenize(pattern)
    parser = _Parser(tokens)
    parser.expect("{")
    test = parser.expression()
    parser.expect("}")
    if parser.peek() is not None:
        raise FilterPatternError(f"unexpected {parser.peek()!r} after the closing brace")
    return JsonPattern(pattern, test)


def _tokenize(pattern: str) -> list[str]:
    tokens: list[str] = []
    pos, n = 0, len(pattern)
    while pos < n:
        if pattern[pos:].strip() == "":
            break
        m = _TOKEN.match(pattern, pos)
        if m is None or m.end() == pos:
            raise FilterPatternError(f"cannot read the JSON pattern at position {pos + 1}")
        tokens.append(m.group("op") or m.group("quoted") or m.group("word"))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.i = 0
        #: parentheses open around the current position
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, what: str) -> str:
        token = self.peek()
        if token is None:
            raise FilterPatternError(f"the JSON pattern ends where {what} was expected")
        self.i += 1
        return token

    def expect(self, token: str) -> None:
        got = self.take(f"'{token}'")
        if got != token:
            raise FilterPatternError(f"expected '{token}' but found {got!r}")

    def expression(self) -> Test:
        terms = [self.conjunction()]
        while self.peek() == "||":
            self.i += 1
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda doc: any(t(doc) for t in terms)

    def conjunction(self) -> Test:
        terms = [self.unary()]
        while self.peek() == "&&":
            self.i += 1
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]
        return lambda doc: all(t(doc) for t in terms)

    def unary(self) -> Test:
        if self.peek() == "(":
            # Each level costs three frames of this recursive descent (and the pattern may
            # be 1,024 characters): a bound keeps the parser off Python's recursion limit.
            if self.depth == MAX_PARENTHESES:
                raise FilterPatternError(
                    f"parentheses are nested deeper than {MAX_PARENTHESES} levels"
                )
            self.i += 1
            self.depth += 1
            inner = self.expression()
            self.expect(")")
            self.depth -= 1
            return inner
        return self.comparison()

    def comparison(self) -> Test:
        selector = self.take("a selector like $.field")
        m = _SELECTOR.fullmatch(selector)
        if m is None:
            raise FilterPatternError(
                f"{selector!r} is not a selector: it starts with $ (like $.field or $.list[0])"
            )
        path: list[str | int] = [
            name if name else int(index) for name, index in _STEP.findall(m.group(1))
        ]
        word = self.take("an operator after " + selector)
        if word.upper() == "IS":
            what = self.take("TRUE, FALSE or NULL").upper()
            if what not in ("TRUE", "FALSE", "NULL"):
                raise FilterPatternError(f"IS must be followed by TRUE, FALSE or NULL, not {what}")
            want: Any = {"TRUE": True, "FALSE": False, "NULL": None}[what]
            return lambda doc: _same(_select(doc, path), want)
        if word.upper() == "NOT":
            if self.take("EXISTS").upper() != "EXISTS":
                raise FilterPatternError("NOT must be followed by EXISTS")
            return lambda doc: _select(doc, path) is _MISSING
        if word not in ("=", "!=", "<", "<=", ">", ">="):
            raise FilterPatternError(f"{word!r} is not a comparison operator")
        return _compare(path, word, self.take(f"a value after {selector} {word}"))


def _select(doc: Any, path: list[str | int]) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(doc, list) or step >= len(doc):
                return _MISSING
        elif not isinstance(doc, dict) or step not in doc:
            return _MISSING
        doc = doc[step]
    return doc


def _same(value: Any, want: Any) -> bool:
    # `is` rather than `==`: 1 == True in Python, and IS TRUE must not match a number.
    return value is want


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(path: list[str | int], op: str, raw: str) -> Test:
    quoted = raw.startswith('"')
    text = _unquote(raw) if quoted else raw
    number = float(text) if not quoted and _NUMBER.fullmatch(text) else None
    if op in ("<", "<=", ">", ">="):
        if number is None:
            raise FilterPatternError(f"{op} compares numbers, and {raw} is not one")
        ordered: dict[str, Callable[[float, float], bool]] = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        check = ordered[op]
        bound = number
        return lambda doc: _is_number(v := _select(doc, path)) and check(v, bound)
    like = _wildcard(text)

    def equal(value: Any) -> bool:
        if _is_number(value):
            return number is not None and float(value) == number
        return isinstance(value, str) and like(value)

    if op == "=":
        return lambda doc: (v := _select(doc, path)) is not _MISSING and equal(v)
    return lambda doc: (v := _select(doc, path)) is not _MISSING and not equal(v)


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


def _wildcard(text: str) -> Callable[[str], bool]:
    """Equality where `*` matches any run of characters (matched piece by piece)."""
    if "*" not in text:
        return lambda value: value == text
    pieces = text.split("*")
    first, last, middle = pieces[0], pieces[-1], pieces[1:-1]

    def like(value: str) -> bool:
        if not value.startswith(first) or not value.endswith(last):
            return False
        if len(first) + len(last) > len(value):
            return False
        pos, end = len(first), len(value) - len(last)
        for piece in middle:
            found = value.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    return like
