"""The IAM-style policy engine: parsing, matching, conditions and the decision rules."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.auth.policy import Caller, PolicyError, authorize, parse, wildcard_match
from lamina.auth.principal import AccessRequest, Decision, Principal

FN = "arn:aws:lambda:us-east-1:000000000000:function:f"
USER = "arn:aws:iam::000000000000:user/alice"


def user(*policies: dict[str, Any], admin: bool = False) -> Principal:
    return Principal("AKIA", USER, "000000000000", admin=admin, policies=policies)


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": action, "Resource": resource, **extra},
    }


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    doc = allow(action, resource, **extra)
    doc["Statement"]["Effect"] = "Deny"
    return doc


def req(action: str = "lambda:InvokeFunction", resource: str = FN, **context: Any) -> AccessRequest:
    return AccessRequest(action, resource, context)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("{not json", "Syntax errors"),
        ([], "JSON object"),
        ({"Version": "2012-10-17"}, "Statement"),
        ({"Version": "2020-01-01", "Statement": []}, "Version"),
        ({"Version": "2012-10-17", "Statement": []}, "non-empty"),
        ({"Version": "2012-10-17", "Bogus": 1, "Statement": []}, "Bogus"),
        (
            allow("lambda:Get*")
            | {"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}},
            "Effect",
        ),
        ({"Statement": {"Effect": "Allow", "Resource": "*"}}, "Action"),
        ({"Statement": {"Effect": "Allow", "Action": "*"}}, "Resource"),
        (
            {"Statement": {"Effect": "Allow", "Action": "*", "NotAction": "x:y", "Resource": "*"}},
            "both",
        ),
        (allow("InvokeFunction"), "service:Operation"),
        (allow("lambda:Invoke", resource="function:f"), "ARN"),
        (allow("lambda:Invoke", resource=[]), "non-empty list"),
        (allow("*", Principal="*"), "identity policy cannot name a Principal"),
        (allow("*", Condition={"StringWobbles": {"aws:SourceIp": "x"}}), "not supported"),
        (allow("*", Condition={"Maybe:StringEquals": {"k": "x"}}), "prefix"),
        (allow("*", Condition={"NumericEquals": {"k": "ten"}}), "NumericEquals"),
        (allow("*", Condition={"DateLessThan": {"aws:CurrentTime": "soon"}}), "DateLessThan"),
        (allow("*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}), "IpAddress"),
        (allow("*", Condition={"Bool": {"aws:SecureTransport": "yes"}}), "true or false"),
        (allow("*", Condition={"StringEquals": {}}), "condition keys"),
        (allow("*", Condition={"StringEquals": {"k": []}}), "no values"),
        (allow("*", Condition={"StringEquals": {"k": {"a": 1}}}), "values must be"),
        (
            {"Statement": [{"Sid": "a", "Effect": "Allow", "Action": "*", "Resource": "*"}] * 2},
            "unique",
        ),
        (allow("*", Resource="arn:aws:s3:::b/${aws:username}"), "policy variables"),
    ],
)
def test_malformed_documents_are_refused_naming_the_problem(doc: Any, words: str) -> None:
    with pytest.raises(PolicyError, match=words.replace("(", r"\(").replace("*", r"\*")):
        parse(doc)


def test_resource_policy_statements_need_a_principal() -> None:
    with pytest.raises(PolicyError, match="Principal"):
        parse(allow("lambda:InvokeFunction"), resource_policy=True)
    with pytest.raises(PolicyError, match="Principal type"):
        parse(allow("*", Principal={"Federated": "x"}), resource_policy=True)
    with pytest.raises(PolicyError, match="NotPrincipal can only be used with Effect Deny"):
        parse(allow("*", NotPrincipal={"AWS": USER}), resource_policy=True)
    with pytest.raises(PolicyError, match="Invalid principal"):
        parse(allow("*", Principal={"AWS": "alice"}), resource_policy=True)


def test_parse_accepts_text_single_statement_and_2008_version() -> None:
    policy = parse(
        '{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}'
    )
    assert policy.version == "2008-10-17"
    assert len(policy.statements) == 1
    assert parse({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}).statements


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "ignore_case", "expected"),
    [
        ("lambda:Get*", "lambda:GetFunction", True, True),
        ("LAMBDA:getfunction", "lambda:GetFunction", True, True),
        ("lambda:Get?unction", "lambda:GetFunction", True, True),
        ("lambda:Get?", "lambda:GetFunction", True, False),
        ("arn:aws:lambda:*:*:function:f", FN, False, True),
        ("arn:aws:lambda:*:*:function:F", FN, False, False),
        ("arn:aws:lambda:*:*:function:f*", FN + ":prod", False, True),
        ("arn:aws:lambda:*:*:function:f:*", FN, False, False),
        ("a.b", "axb", False, False),
    ],
)
def test_wildcards(pattern: str, value: str, ignore_case: bool, expected: bool) -> None:
    assert wildcard_match(pattern, value, ignore_case=ignore_case) is expected


def test_no_principal_and_admin_are_allowed() -> None:
    assert authorize(None, req()) is Decision.ALLOW
    assert authorize(user(admin=True), req()) is Decision.ALLOW
    assert authorize(user(deny("*"), admin=True), req()) is Decision.ALLOW


def test_nothing_allows_is_an_implicit_deny() -> None:
    assert authorize(user(), req()) is Decision.IMPLICIT_DENY
    assert authorize(user(allow("lambda:GetFunction")), req()) is Decision.IMPLICIT_DENY


def test_allow_by_action_and_resource() -> None:
    p = user(allow(["lambda:InvokeFunction", "logs:*"], FN))
    assert authorize(p, req()) is Decision.ALLOW
    assert authorize(p, req("lambda:invokefunction")) is Decision.ALLOW
    assert authorize(p, req(resource=FN + "2")) is Decision.IMPLICIT_DENY
    assert authorize(p, req("logs:FilterLogEvents", FN)) is Decision.ALLOW


def test_unqualified_arn_does_not_cover_qualified_ones() -> None:
    p = user(allow("lambda:InvokeFunction", FN))
    assert authorize(p, req(resource=FN + ":prod")) is Decision.IMPLICIT_DENY
    q = user(allow("lambda:InvokeFunction", FN + ":*"))
    assert authorize(q, req(resource=FN + ":prod")) is Decision.ALLOW
    assert authorize(q, req(resource=FN)) is Decision.IMPLICIT_DENY


def test_explicit_deny_wins_whatever_the_order() -> None:
    p = user(allow("*"), deny("lambda:Invoke*", FN))
    assert authorize(p, req()) is Decision.EXPLICIT_DENY
    assert authorize(p, req("lambda:GetFunction")) is Decision.ALLOW
    # a deny in the resource policy wins over the identity policy's allow
    rp = deny("lambda:InvokeFunction", FN, Principal="*")
    assert authorize(user(allow("*")), req(), rp) is Decision.EXPLICIT_DENY


def test_not_action_and_not_resource() -> None:
    p = user(
        allow("*")
        | {
            "Statement": {
                "Effect": "Allow",
                "NotAction": "lambda:Delete*",
                "NotResource": FN + ":*",
            }
        }
    )
    assert authorize(p, req()) is Decision.ALLOW
    assert authorize(p, req("lambda:DeleteFunction")) is Decision.IMPLICIT_DENY
    assert authorize(p, req(resource=FN + ":1")) is Decision.IMPLICIT_DENY


def test_resource_policy_allows_a_named_principal() -> None:
    for principal in (
        "*",
        {"AWS": "*"},
        {"AWS": "000000000000"},
        {"AWS": USER},
        {"AWS": ["arn:aws:iam::000000000000:root"]},
    ):
        rp = allow("lambda:InvokeFunction", FN, Principal=principal)
        assert authorize(user(), req(), rp) is Decision.ALLOW, principal
    for principal in (
        {"AWS": "111111111111"},
        {"AWS": USER + "x"},
        {"Service": "events.amazonaws.com"},
    ):
        rp = allow("lambda:InvokeFunction", FN, Principal=principal)
        assert authorize(user(), req(), rp) is Decision.IMPLICIT_DENY, principal


def test_role_session_matches_its_role_arn() -> None:
    role = "arn:aws:iam::000000000000:role/r"
    session = Principal(
        "ASIA", "arn:aws:sts::000000000000:assumed-role/r/s", "000000000000", role_arn=role
    )
    rp = allow("lambda:InvokeFunction", FN, Principal={"AWS": role})
    assert authorize(session, req(), rp) is Decision.ALLOW


def test_not_principal() -> None:
    rp = deny("*", "*", NotPrincipal={"AWS": USER})
    assert authorize(user(allow("*")), req(), rp) is Decision.ALLOW
    other = Principal("AKIB", USER + "2", "000000000000", policies=(allow("*"),))
    assert authorize(other, req(), rp) is Decision.EXPLICIT_DENY


def test_service_caller() -> None:
    rp = allow("lambda:InvokeFunction", FN, Principal={"Service": "events.amazonaws.com"})
    events = Caller(service="events.amazonaws.com")
    assert authorize(None, req(), rp, caller=events) is Decision.ALLOW
    assert authorize(None, req(), rp, caller=Caller(service="s3.amazonaws.com")) is (
        Decision.IMPLICIT_DENY
    )
    assert authorize(None, req(), None, caller=events) is Decision.IMPLICIT_DENY


# -- conditions ----------------------------------------------------------------------------


def req_ctx(context: dict[str, Any]) -> AccessRequest:
    return AccessRequest("lambda:InvokeFunction", FN, context)


def check(block: dict[str, Any], context: dict[str, Any]) -> bool:
    return authorize(user(allow("*", Condition=block)), req_ctx(context)) is Decision.ALLOW


@pytest.mark.parametrize(
    ("block", "context", "expected"),
    [
        ({"StringEquals": {"k": "a"}}, {"k": "a"}, True),
        ({"StringEquals": {"k": "a"}}, {"K": "a"}, True),  # keys are case-insensitive
        ({"StringEquals": {"k": "a"}}, {"k": "A"}, False),
        ({"StringEquals": {"k": ["x", "a"]}}, {"k": "a"}, True),  # values OR
        ({"StringEquals": {"k": "a", "j": "b"}}, {"k": "a", "j": "c"}, False),  # keys AND
        ({"StringEquals": {"k": "a"}, "StringLike": {"j": "b*"}}, {"k": "a", "j": "bc"}, True),
        ({"StringEquals": {"k": "a"}}, {}, False),
        ({"StringEqualsIfExists": {"k": "a"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "a"}}, {"k": "b"}, False),
        ({"StringNotEquals": {"k": "a"}}, {"k": "b"}, True),
        ({"StringNotEquals": {"k": ["a", "b"]}}, {"k": "b"}, False),
        ({"StringNotEquals": {"k": "a"}}, {}, True),
        ({"StringEqualsIgnoreCase": {"k": "ABC"}}, {"k": "abc"}, True),
        ({"StringNotEqualsIgnoreCase": {"k": "ABC"}}, {"k": "abc"}, False),
        ({"StringLike": {"k": "a?c*"}}, {"k": "abcdef"}, True),
        ({"StringNotLike": {"k": "a*"}}, {"k": "abc"}, False),
        ({"NumericLessThan": {"k": 10}}, {"k": "9.5"}, True),
        ({"NumericGreaterThanEquals": {"k": "10"}}, {"k": "9"}, False),
        ({"NumericEquals": {"k": "10"}}, {"k": "ten"}, False),
        ({"NumericNotEquals": {"k": "10"}}, {"k": "11"}, True),
        (
            {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2026-11-27T03:00:00Z"},
            True,
        ),
        (
            {"DateGreaterThan": {"aws:EpochTime": "1700000000"}},
            {"aws:EpochTime": "1600000000"},
            False,
        ),
        ({"DateEquals": {"k": "2026-01-01T00:00:00Z"}}, {"k": "1767225600"}, True),
        ({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "true"}, True),
        ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"}, False),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, True),
        (
            {"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "::1/128"]}},
            {"aws:SourceIp": "::1"},
            True,
        ),
        ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, False),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/r*"}},
            {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/r1"},
            True,
        ),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/r*"}},
            {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/x"},
            False,
        ),
        (
            {"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/r"}},
            {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/r"},
            True,
        ),
        (
            {"ArnNotLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/r*"}},
            {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/x"},
            True,
        ),
        (
            {"ArnNotEquals": {"aws:SourceArn": "arn:aws:events:*:*:rule/x"}},
            {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/x"},
            False,
        ),
        ({"Null": {"k": "true"}}, {}, True),
        ({"Null": {"k": "true"}}, {"k": "v"}, False),
        ({"Null": {"k": False}}, {"k": "v"}, True),
        ({"ForAnyValue:StringEquals": {"k": ["a", "b"]}}, {"k": ["c", "b"]}, True),
        ({"ForAnyValue:StringEquals": {"k": ["a", "b"]}}, {"k": ["c", "d"]}, False),
        ({"ForAnyValue:StringEquals": {"k": "a"}}, {}, False),
        ({"ForAllValues:StringEquals": {"k": ["a", "b"]}}, {"k": ["a", "b"]}, True),
        ({"ForAllValues:StringEquals": {"k": ["a", "b"]}}, {"k": ["a", "c"]}, False),
        ({"ForAllValues:StringEquals": {"k": ["a"]}}, {}, True),
        ({"ForAllValues:StringLikeIfExists": {"k": "a*"}}, {"k": ["ab", "ac"]}, True),
        ({"ForAnyValue:StringNotEquals": {"k": "a"}}, {"k": ["a", "b"]}, True),
    ],
)
def test_condition_operators(
    block: dict[str, Any], context: dict[str, Any], expected: bool
) -> None:
    assert check(block, context) is expected


def test_a_condition_on_a_deny_only_denies_when_it_holds() -> None:
    p = user(allow("*"), deny("*", Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert authorize(p, req_ctx({"aws:SourceIp": "10.0.0.1"})) is Decision.ALLOW
    assert authorize(p, req_ctx({"aws:SourceIp": "8.8.8.8"})) is Decision.EXPLICIT_DENY
