"""The pure parts of stack provisioning: names, parameter overrides, traffic-shift steps,
routes read from an OpenAPI body, inline code."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import click
import pytest

from lamina.cli.stacks import default_stack_name, parse_overrides
from lamina.stacks import TemplateError
from lamina.stacks.apis import routes_of
from lamina.stacks.kinds import coerce, function_and_qualifier, generated_name, zip_inline
from lamina.stacks.shift import steps


def test_generated_names_fit_and_stay_distinct() -> None:
    assert generated_name("app", "HelloWorldFunction") == "app-HelloWorldFunction"
    long_a = generated_name("a-very-long-stack-name", "X" * 60)
    long_b = generated_name("a-very-long-stack-name", "X" * 59 + "Y")
    assert len(long_a) == 64 and len(long_b) == 64 and long_a != long_b
    assert long_a.startswith("a-very-long-stack-name-XXX")


def test_parameter_overrides_take_both_spellings() -> None:
    got = parse_overrides(("Stage=prod Size=3", "ParameterKey=Name,ParameterValue=a=b", "Empty="))
    assert got == {"Stage": "prod", "Size": "3", "Name": "a=b", "Empty": ""}
    assert parse_overrides(('Greeting="Hello there" Stage=dev',)) == {
        "Greeting": "Hello there",
        "Stage": "dev",
    }
    for bad in ("novalue", 'Open="quote'):
        with pytest.raises(click.BadParameter):
            parse_overrides((bad,))


def test_default_stack_name_is_the_template_directory() -> None:
    assert default_stack_name(Path("/apps/sam-app/template.yaml")) == "sam-app"
    assert default_stack_name(Path("/apps/my_app 2/template.yaml")) == "my-app-2"
    assert default_stack_name(Path("/apps/2fast/template.yaml")) == "stack-2fast"


def test_shift_steps() -> None:
    assert steps("CodeDeployDefault.LambdaCanary10Percent5Minutes") == [(0.1, 5.0)]
    assert steps("Linear10PercentEvery1Minute") == [(p / 10, 1.0) for p in range(1, 10)]
    assert steps("CodeDeployDefault.LambdaLinear25PercentEvery2Minutes") == [
        (0.25, 2.0),
        (0.5, 2.0),
        (0.75, 2.0),
    ]
    assert steps("CodeDeployDefault.LambdaAllAtOnce") == []


def test_routes_from_openapi_bodies() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:app-Fn:live"
    uri = f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"
    integration = {"x-amazon-apigateway-integration": {"uri": uri, "type": "aws_proxy"}}
    body = {
        "paths": {
            "/hello": {"get": integration, "parameters": []},
            "/{proxy+}": {"x-amazon-apigateway-any-method": integration},
            "/$default": {"x-amazon-apigateway-any-method": integration},
            "/mock": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}},
        }
    }
    rest = routes_of(body, True, "Api")
    assert [(r["routeKey"], r["payloadFormatVersion"]) for r in rest] == [
        ("GET /hello", "1.0"),
        ("ANY /{proxy+}", "1.0"),
        ("$default", "1.0"),
    ]
    assert {r["function"] for r in rest} == {arn}
    http = routes_of(body, False, "Api")
    assert {r["payloadFormatVersion"] for r in http} == {"2.0"}
    with pytest.raises(TemplateError) as e:
        routes_of(None, True, "Api")
    assert e.value.logical_id == "Api"


def test_inline_code_is_index_by_runtime() -> None:
    for runtime, name in (("python3.12", "index.py"), ("nodejs20.x", "index.js")):
        data = zipfile.ZipFile(io.BytesIO(base64.b64decode(zip_inline("x", runtime))))
        assert data.namelist() == [name] and data.read(name) == b"x"


def test_small_conversions() -> None:
    assert coerce(
        {"Timeout": "30", "Enabled": "false", "Name": "7"}, ("Timeout",), ("Enabled",)
    ) == {
        "Timeout": 30,
        "Enabled": False,
        "Name": "7",
    }
    assert function_and_qualifier("arn:aws:lambda:us-east-1:1:function:f:live") == ("f", "live")
    assert function_and_qualifier("f") == ("f", None)
    assert function_and_qualifier("f:3") == ("f", "3")
