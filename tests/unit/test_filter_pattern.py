"""CloudWatch text filter patterns: terms, phrases, exclusions, alternatives, refusals."""

from __future__ import annotations

import pytest

from lamina.observability.filter_pattern import FilterPatternError, parse

LINES = [
    "START RequestId: 1 Version: $LATEST",
    "ERROR something broke: Task timed out",
    "WARN disk nearly full",
    "INFO order 42 shipped",
    "error in lower case",
    'He said "hello" twice',
]


def matching(pattern: str) -> list[str]:
    compiled = parse(pattern)
    return [line for line in LINES if compiled.matches(line)]


@pytest.mark.parametrize("pattern", ["", "   ", '""'])
def test_empty_pattern_matches_everything(pattern: str) -> None:
    assert matching(pattern) == LINES
    assert parse(pattern).matches_everything


def test_terms_must_all_appear_case_sensitively() -> None:
    assert matching("ERROR") == ["ERROR something broke: Task timed out"]
    assert matching("ERROR broke") == ["ERROR something broke: Task timed out"]
    assert matching("ERROR shipped") == []
    assert matching("error") == ["error in lower case"]


def test_quoted_phrase_is_one_term() -> None:
    assert matching('"Task timed out"') == ["ERROR something broke: Task timed out"]
    assert matching('"timed Task"') == []
    assert matching('"broke:"') == ["ERROR something broke: Task timed out"]
    assert matching(r'"said \"hello\""') == ['He said "hello" twice']


def test_exclusions() -> None:
    assert matching("e -ERROR -error") == [
        "START RequestId: 1 Version: $LATEST",
        "WARN disk nearly full",
        "INFO order 42 shipped",
        'He said "hello" twice',
    ]
    assert matching('-"Task timed out" ERROR') == []


def test_alternatives() -> None:
    assert matching("?ERROR ?WARN") == [
        "ERROR something broke: Task timed out",
        "WARN disk nearly full",
    ]
    # plain terms stay required alongside an OR-group
    assert matching("disk ?ERROR ?WARN") == ["WARN disk nearly full"]
    assert matching('?"order 42" ?nothing -INFO') == []


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ('"unclosed', "unbalanced quote"),
        ('ERROR "Task timed', "unbalanced quote"),
        ('ab"c', "quote inside a term"),
        ('"a"b', "runs into the next term"),
        ("-", "must be followed by a term"),
        ("ERROR ?", "must be followed by a term"),
        ('{ $.level = "ERROR"', "ends where '}' was expected"),
        ("{ level = ERROR }", "is not a selector"),
        ("{ $.a ~ 1 }", "not a comparison operator"),
        ("{ $.a > high }", "compares numbers"),
        ("{ $.a ! 1 }", "cannot read"),
        ("{ $.a IS MAYBE }", "TRUE, FALSE or NULL"),
        ("{ $.a NOT THERE }", "NOT must be followed by EXISTS"),
        ("{ $.a = 1 } x", "after the closing brace"),
        ("{ ($.a = 1 }", "but found '}'"),
        ("[ip, user]", "space-delimited"),
        ("%ERR.*%", "regular expressions"),
    ],
)
def test_malformed_or_unsupported_patterns_are_refused(pattern: str, fragment: str) -> None:
    with pytest.raises(FilterPatternError, match=fragment):
        parse(pattern)


def test_percent_alone_is_a_plain_term() -> None:
    assert parse("50%").matches("CPU at 50%")


EVENTS = [
    '{"level": "ERROR", "latency": 250, "user": {"id": "u-17", "admin": true}, "tags": ["a", "b"]}',
    '{"level": "INFO", "latency": 12.5, "user": {"id": "u-3", "admin": false}, "note": null}',
    '{"level": "WARN", "code": "200", "user": {"id": "x-9"}}',
    "ERROR plain text is never a JSON match",
    "[1, 2]",
]


def json_matching(pattern: str) -> list[int]:
    parsed = parse(pattern)
    assert not parsed.matches_everything
    return [i for i, event in enumerate(EVENTS) if parsed.matches(event)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('{ $.level = "ERROR" }', [0]),
        ("{ $.level = ERROR }", [0]),
        ('{ $.level != "ERROR" }', [1, 2]),
        ("{ $.latency > 100 }", [0]),
        ("{ $.latency <= 12.5 }", [1]),
        ("{ $.latency = 250 }", [0]),
        ("{ $.code = 200 }", [2]),  # a bare number compares as text with a string field
        ('{ $.user.id = "u-*" }', [0, 1]),
        ('{ $.user.id = "*-1*" }', [0]),
        ("{ $.user.admin IS TRUE }", [0]),
        ("{ $.user.admin IS FALSE }", [1]),
        ("{ $.note IS NULL }", [1]),
        ("{ $.latency NOT EXISTS }", [2]),
        ("{ $.tags[1] = b }", [0]),
        ("{ $.tags[5] = b }", []),
        ('{ $.level = "ERROR" || $.level = "WARN" }', [0, 2]),
        ('{ $.level = "INFO" || $.level = "WARN" && $.latency > 1 }', [1]),
        ('{ ($.level = "INFO" || $.level = "WARN") && $.user.id = "x*" }', [2]),
        ('{ $.missing != "x" }', []),  # a selector naming nothing: false
    ],
)
def test_json_patterns(pattern: str, expected: list[int]) -> None:
    assert json_matching(pattern) == expected
