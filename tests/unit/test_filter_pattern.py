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
        ('{ $.level = "ERROR" }', "JSON filter patterns"),
        ("[ip, user]", "space-delimited"),
        ("%ERR.*%", "regular expressions"),
    ],
)
def test_malformed_or_unsupported_patterns_are_refused(pattern: str, fragment: str) -> None:
    with pytest.raises(FilterPatternError, match=fragment):
        parse(pattern)


def test_percent_alone_is_a_plain_term() -> None:
    assert parse("50%").matches("CPU at 50%")
