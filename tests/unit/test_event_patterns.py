"""EventBridge event patterns: validation and matching (examples from EventBridge's guide)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.event_patterns import InvalidEventPatternError, compile, matches

EVENT: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "c-count": 5,
        "d-count": 3.0e2,
        "x-limit": 3.018e2,
        "source-ip": "10.0.0.123",
        "enabled": True,
        "nothing": None,
        "tags": ["blue", "prod"],
        "location": {"city": "Seattle", "zip": "98101"},
        "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 0}],
        "filename": "photos/cat.PNG",
        "empty": [],
    },
}


def match(pattern: Any, event: dict[str, Any] | None = None) -> bool:
    return matches(compile(json.dumps(pattern)), EVENT if event is None else event)


@pytest.mark.parametrize(
    "pattern",
    [
        {"source": ["aws.ec2"]},
        {"source": ["aws.s3", "aws.ec2"]},
        {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
        {"detail": {"state": ["terminated"]}},
        {"detail": {"c-count": [5]}},
        {"detail": {"c-count": [5.0]}},
        {"detail": {"d-count": [300]}},
        {"detail": {"d-count": [3.0e2]}},
        {"detail": {"enabled": [True]}},
        {"detail": {"nothing": [None]}},
        {"detail": {"tags": ["prod"]}},
        {"detail": {"location": {"city": ["Seattle"]}}},
        {"detail": {"items": {"sku": ["b-2"]}}},
        {"resources": [{"prefix": "arn:aws:ec2:"}]},
        {"detail": {"state": [{"prefix": "term"}]}},
        {"detail": {"state": [{"prefix": {"equals-ignore-case": "TERM"}}]}},
        {"detail": {"filename": [{"suffix": ".PNG"}]}},
        {"detail": {"filename": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        {"detail": {"state": [{"equals-ignore-case": "TERMINATED"}]}},
        {"detail": {"state": [{"anything-but": "running"}]}},
        {"detail": {"state": [{"anything-but": ["running", "pending"]}]}},
        {"detail": {"c-count": [{"anything-but": [1, 2, 3]}]}},
        {"detail": {"state": [{"anything-but": {"prefix": "run"}}]}},
        {"detail": {"state": [{"anything-but": {"suffix": "ing"}}]}},
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": ["RUNNING"]}}]}},
        {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}},
        {"detail": {"c-count": [{"numeric": ["=", 5]}]}},
        {"detail": {"x-limit": [{"numeric": [">=", 301.8]}]}},
        {"detail": {"d-count": [{"numeric": ["<", 301]}]}},
        {"detail": {"state": [{"exists": True}]}},
        {"detail": {"missing": [{"exists": False}]}},
        {"nowhere": {"deep": [{"exists": False}]}},
        {"detail": {"filename": [{"wildcard": "photos/*.PNG"}]}},
        {"detail": {"filename": [{"wildcard": "*cat*"}]}},
        {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}},
        {"detail": {"state": ["running", {"prefix": "ter"}]}},
        {"$or": [{"source": ["aws.s3"]}, {"detail": {"c-count": [5]}}]},
        {"source": ["aws.ec2"], "$or": [{"detail": {"state": ["x"]}}, {"region": ["us-west-1"]}]},
        {"detail": {"$or": [{"state": ["x"]}, {"c-count": [{"numeric": [">", 4]}]}]}},
    ],
)
def test_matches(pattern: Any) -> None:
    assert match(pattern), pattern


@pytest.mark.parametrize(
    "pattern",
    [
        {"source": ["aws.s3"]},
        {"source": ["AWS.EC2"]},
        {"source": ["aws.ec2"], "detail-type": ["other"]},
        {"detail": {"state": ["running"]}},
        {"detail": {"c-count": ["5"]}},  # a string never equals a number
        {"detail": {"enabled": [1]}},  # nor a number a boolean
        {"detail": {"c-count": [True]}},
        {"detail": {"missing": [None]}},  # null matches a present null, not an absent field
        {"detail": {"tags": ["dev"]}},
        {"detail": {"location": {"city": ["Portland"]}}},
        {"detail": {"items": {"sku": ["c-3"]}}},
        {"detail": {"state": [{"prefix": "TERM"}]}},
        {"detail": {"filename": [{"suffix": ".png"}]}},
        {"detail": {"state": [{"equals-ignore-case": "terminate"}]}},
        {"detail": {"state": [{"anything-but": "terminated"}]}},
        {"detail": {"state": [{"anything-but": ["terminated", "x"]}]}},
        {"detail": {"missing": [{"anything-but": "x"}]}},  # needs the field
        {"detail": {"state": [{"anything-but": {"prefix": "ter"}}]}},
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "TERMINATED"}}]}},
        {"detail": {"c-count": [{"numeric": [">", 5]}]}},
        {"detail": {"c-count": [{"numeric": [">", 0, "<", 5]}]}},
        {"detail": {"state": [{"numeric": [">", 0]}]}},  # strings are not numbers
        {"detail": {"enabled": [{"numeric": [">", 0]}]}},
        {"detail": {"state": [{"exists": False}]}},
        {"detail": {"missing": [{"exists": True}]}},
        {"detail": {"location": [{"exists": True}]}},  # exists is for leaves
        {"detail": {"empty": [{"exists": True}]}},
        {"detail": {"filename": [{"wildcard": "photos/*.png"}]}},
        {"detail": {"filename": [{"wildcard": "cat*"}]}},
        {"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}},
        {"detail": {"state": [{"cidr": "10.0.0.0/8"}]}},
        {"$or": [{"source": ["aws.s3"]}, {"detail": {"c-count": [6]}}]},
        {"source": ["aws.s3"], "$or": [{"region": ["us-west-1"]}, {"account": ["1"]}]},
        {"nowhere": ["x"]},
    ],
)
def test_does_not_match(pattern: Any) -> None:
    assert not match(pattern), pattern


def test_escaped_wildcard_star_is_literal() -> None:
    event = {"name": "a*b"}
    assert match({"name": [{"wildcard": "a\\*b"}]}, event)
    assert not match({"name": [{"wildcard": "a\\*b"}]}, {"name": "axxb"})
    assert match({"name": [{"wildcard": "a*b"}]}, {"name": "axxb"})


def test_matches_takes_pattern_text_too() -> None:
    assert matches('{"source": ["aws.ec2"]}', EVENT)
    assert not matches('{"source": ["aws.s3"]}', EVENT)
    with pytest.raises(InvalidEventPatternError):
        matches('{"source": "aws.ec2"}', EVENT)


def test_ipv6_cidr() -> None:
    assert match({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"})
    assert not match({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"})
    assert not match({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "not an ip"})


def test_exists_false_or_value() -> None:
    pattern = {"detail": {"x": [{"exists": False}, "a"]}}
    assert match(pattern, {"detail": {}})
    assert match(pattern, {"detail": {"x": "a"}})
    assert not match(pattern, {"detail": {"x": "b"}})


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("not json", "Filter is not valid JSON"),
        ("[]", "Filter is not an object"),
        ('"source"', "Filter is not an object"),
        ("{}", "Empty objects are not allowed"),
        ('{"source": "aws.ec2"}', '"source" must be an object or an array'),
        ('{"source": []}', "Empty arrays are not allowed"),
        ('{"source": [["a"]]}', "Match value must be String, number, true, false, or null"),
        ('{"source": [{"foo": "a"}]}', "Unrecognized match type foo"),
        ('{"source": [{"prefix": "a", "suffix": "b"}]}', "Only one key allowed"),
        ('{"source": [{"prefix": 5}]}', "prefix match pattern must be a string"),
        ('{"source": [{"exists": "yes"}]}', "exists match pattern must be either true or false"),
        ('{"n": [{"numeric": [">", "a"]}]}', "Value of > must be numeric"),
        ('{"n": [{"numeric": ["!", 1]}]}', "Unrecognized numeric range operator"),
        ('{"n": [{"numeric": [">", 1, ">", 2]}]}', "Bad numeric range"),
        ('{"n": [{"numeric": [">", 5, "<", 2]}]}', "Bad numeric range"),
        ('{"n": [{"numeric": [">"]}]}', "numeric"),
        ('{"n": [{"numeric": [">", 6e9]}]}', "between -5.0E9 and 5.0E9"),
        ('{"n": [{"wildcard": "a**b"}]}', "Consecutive wildcard characters"),
        ('{"n": [{"cidr": "10.0.0.300/8"}]}', "Malformed CIDR"),
        ('{"n": [{"cidr": "10.0.0.1"}]}', "Malformed CIDR"),
        ('{"n": [{"anything-but": [null]}]}', "anything but list"),
        ('{"n": [{"anything-but": {"numeric": [">", 1]}}]}', "Unsupported anything-but"),
        ('{"$or": [{"a": ["x"]}]}', "Or relationship"),
        ('{"$or": "x"}', "Or relationship"),
        ('{"detail": {"x": {}}}', "Empty objects are not allowed"),
    ],
)
def test_invalid(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidEventPatternError) as e:
        compile(pattern)
    assert e.value.message.startswith("Event pattern is not valid. Reason: ")
    assert reason in e.value.message
    assert e.value.error_type == "InvalidEventPatternException"
