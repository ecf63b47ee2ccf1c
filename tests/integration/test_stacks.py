"""`lamina deploy --template` and `lamina stacks`: SAM applications deployed onto Lamina,
updated, deleted; unsupported resources, broken templates and rollback (docs/stacks.md).

The fixtures are in tests/fixtures/sam (the three-function app, and `sam init`'s hello world
in Python and Node); each test deploys a copy, so that it can edit the code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import (
    SIGNED_HTTP,
    Server,
    fetch,
    lamina,
    lamina_env,
    make_zip,
    wait_for,
)

pytestmark = pytest.mark.control_plane

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sam"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def _stack() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def _deploy(server: Server, template: Path, stack: str, *extra: str) -> Any:
    out = lamina(
        "deploy", "--template", str(template), "--stack", stack, *extra, endpoint=server.endpoint
    )
    return out


def _record(server: Server, stack: str) -> dict[str, Any] | None:
    resp = SIGNED_HTTP.get(f"{server.endpoint}/lamina/stacks/{stack}")
    return None if resp.status_code == 404 else resp.json()["Stack"]


def _function_names(lam: Any, prefix: str) -> set[str]:
    names = set()
    for page in lam.get_paginator("list_functions").paginate():
        names |= {f["FunctionName"] for f in page["Functions"]}
    return {n for n in names if n.startswith(prefix)}


def _routes(server: Server) -> dict[str, str]:
    data = SIGNED_HTTP.get(f"{server.endpoint}/lamina/routes").json()
    return {r["routeKey"]: r["function"] for r in data["routes"]}


def _get(url: str) -> tuple[int, Any]:
    status, _, body = fetch(url)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def _changed(stdout: str) -> set[tuple[str, str]]:
    """(status, logical id) of each progress line that changed something."""
    out = set()
    for line in stdout.splitlines():
        words = line.split()
        if (
            len(words) >= 3
            and words[1] != "AWS::CloudFormation::Stack"
            and words[0]
            in (
                "CREATE_COMPLETE",
                "UPDATE_COMPLETE",
                "DELETE_COMPLETE",
                "DELETE_SKIPPED",
            )
        ):
            out.add((words[0], words[2]))
    return out


def test_app_deploys_updates_and_deletes(server: Server, lam: Any, tmp_path: Path) -> None:
    app = _copy("app", tmp_path)
    stack = _stack()
    out = _deploy(server, app / "template.yaml", stack)
    assert out.returncode == 0, out.stdout + out.stderr
    record = _record(server, stack)
    assert record is not None and record["StackStatus"] == "CREATE_COMPLETE"
    resources = record["Resources"]
    outputs = record["Outputs"]

    # the HTTP API route answers, through the alias, with the layer's code
    assert _routes(server)["GET /greet/{name}"].endswith(f"function:{stack}-ApiFunction:live")
    status, body = _get(f"{server.endpoint}/_http/greet/ada")
    assert (status, body) == (200, {"message": "Hello, ada!", "stage": "dev"})
    assert f"{server.endpoint}/_http/greet/{{name}}" in out.stdout
    api = lam.get_function_configuration(FunctionName=f"{stack}-ApiFunction")
    assert [layer["Arn"] for layer in api["Layers"]] == [outputs["LayerArn"]]
    alias = lam.get_alias(FunctionName=f"{stack}-ApiFunction", Name="live")
    assert alias["FunctionVersion"] == "1"
    assert outputs["ApiFunctionAliasArn"] == alias["AliasArn"]

    # the schedule rule, with its target; the role the cron function runs as
    events = server.client("events")
    rule = events.describe_rule(Name=f"{stack}-CronFunctionTick")
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [
        f"arn:aws:lambda:us-east-1:000000000000:function:{stack}-CronFunction"
    ]
    role = resources["CronRole"]["physical_ref"]
    got = SIGNED_HTTP.get(f"{server.endpoint}/lamina/roles/{role}").json()["Role"]
    cron = lam.get_function_configuration(FunctionName=f"{stack}-CronFunction")
    assert cron["Role"] == got["Arn"]
    assert "logs:PutLogEvents" in json.dumps(got["Policies"])

    # the function URL answers
    status, body = _get(outputs["FunctionUrl"] + "hi")
    assert (status, body) == (200, {"path": "/hi", "api_function": f"{stack}-ApiFunction"})

    # the same template again: nothing changes
    again = _deploy(server, app / "template.yaml", stack)
    assert again.returncode == 0, again.stderr
    assert _changed(again.stdout) == set(), again.stdout
    assert "No changes to deploy" in again.stdout

    # one function's code changed, one function removed (its condition turned off)
    code = app / "src" / "api" / "app.py"
    code.write_text(code.read_text().replace('"message"', '"greeting"'))
    layer_code = app / "layers" / "common" / "python" / "greeting.py"
    layer_code.write_text(layer_code.read_text().replace("!", "!!"))
    url_config = lam.get_function_url_config(FunctionName=f"{stack}-UrlFunction")
    update = _deploy(
        server, app / "template.yaml", stack, "--parameter-overrides", "EnableUrl=false"
    )
    assert update.returncode == 0, update.stdout + update.stderr
    changed = _changed(update.stdout)
    updated = {lid for status, lid in changed if status == "UPDATE_COMPLETE"}
    assert {"ApiFunction", "ApiFunctionAliaslive"} <= updated
    assert not any(lid.startswith(("Cron", "CommonLayer")) for lid in updated), changed
    deleted = {lid for status, lid in changed if status == "DELETE_COMPLETE"}
    assert {
        "UrlFunction",
        "UrlFunctionUrl",
        "UrlFunctionRole",
        "UrlFunctionUrlPublicPermissions",
    } <= deleted
    alias = lam.get_alias(FunctionName=f"{stack}-ApiFunction", Name="live")
    assert alias["FunctionVersion"] == "2"
    assert _get(f"{server.endpoint}/_http/greet/ada")[1] == {
        "greeting": "Hello, ada!!",
        "stage": "dev",
    }
    # the layer's content changed: a new version, used by the function; the old one retained
    layers = lam.list_layer_versions(LayerName=f"{stack}-common")["LayerVersions"]
    assert sorted(v["Version"] for v in layers) == [1, 2]
    api = lam.get_function_configuration(FunctionName=f"{stack}-ApiFunction")
    assert [layer["Arn"] for layer in api["Layers"]] == [outputs["LayerArn"][:-1] + "2"]
    assert _function_names(lam, stack) == {f"{stack}-ApiFunction", f"{stack}-CronFunction"}
    assert fetch(url_config["FunctionUrl"])[0] in (403, 404)  # no such URL any more
    record = _record(server, stack)
    assert record is not None and record["StackStatus"] == "UPDATE_COMPLETE"
    assert "UrlFunction" not in record["Resources"] and "FunctionUrl" not in record["Outputs"]
    listed = lamina("stacks", endpoint=server.endpoint)
    assert stack in listed.stdout and "UPDATE_COMPLETE" in listed.stdout

    # deleted: nothing left but what the template retains (the layer version)
    gone = lamina("stacks", "delete", stack, endpoint=server.endpoint)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert _function_names(lam, stack) == set()
    assert not any(f"{stack}-" in f for f in _routes(server).values())
    assert not [r for r in events.list_rules()["Rules"] if r["Name"].startswith(stack)]
    roles = SIGNED_HTTP.get(f"{server.endpoint}/lamina/roles").json()["Roles"]
    assert not [r for r in roles if r["RoleName"].startswith(stack)]
    assert _record(server, stack) is None
    layer = lam.list_layer_versions(LayerName=f"{stack}-common")["LayerVersions"]
    assert sorted(v["Version"] for v in layer) == [1, 2]  # DeletionPolicy: Retain
    assert "DELETE_SKIPPED" in gone.stdout


@pytest.mark.parametrize(
    ("app", "runtime_code", "old", "new"),
    [
        ("hello-python", "hello_world/app.py", "hello world", "hello again"),
        ("hello-node", "hello-world/app.mjs", "hello world", "hello again"),
    ],
)
def test_sam_hello_world(
    server: Server, lam: Any, tmp_path: Path, app: str, runtime_code: str, old: str, new: str
) -> None:
    root = _copy(app, tmp_path)
    # the stack's default name is the template's directory
    out = lamina("deploy", "--template", str(root / "template.yaml"), endpoint=server.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _record(server, app) is not None
    url = f"{server.endpoint}/_http/hello"
    assert url in out.stdout
    status, body = _get(url)
    assert (status, body) == (200, {"message": old})
    code = root / runtime_code
    assert old in code.read_text()
    code.write_text(code.read_text().replace(old, new))
    again = lamina("deploy", "--template", str(root / "template.yaml"), endpoint=server.endpoint)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ("UPDATE_COMPLETE", "HelloWorldFunction") in _changed(again.stdout)
    assert _get(url) == (200, {"message": new})
    gone = lamina("stack", "delete", app, endpoint=server.endpoint)
    assert gone.returncode == 0, gone.stderr
    assert fetch(url)[0] == 404
    assert _function_names(lam, f"{app}-") == set()
    roles = SIGNED_HTTP.get(f"{server.endpoint}/lamina/roles").json()["Roles"]
    assert not [r for r in roles if r["RoleName"].startswith(f"{app}-")]


UNSUPPORTED = """\
AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: arn:aws:iam::000000000000:role/lamina-function
      Environment:
        Variables:
          QUEUE: !Ref Queue
          QUEUE_ARN: !GetAtt Queue.Arn
      Code:
        ZipFile: |
          import os
          def handler(event, context):
              return {"queue": os.environ["QUEUE"], "arn": os.environ["QUEUE_ARN"]}
  OnOrder:
    Type: AWS::Events::Rule
    Properties:
      EventPattern:
        source: [shop.orders]
        detail-type: [OrderPlaced]
      Targets:
        - Id: fn
          Arn: !GetAtt Fn.Arn
          Input: {"from": "rule"}
"""


def test_unsupported_resource_is_skipped_with_a_warning_or_fails_strict(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(UNSUPPORTED)
    stack = _stack()
    strict = _deploy(server, template, stack, "--strict")
    assert strict.returncode != 0
    assert "AWS::SQS::Queue" in strict.stderr and "Queue" in strict.stderr
    assert _function_names(lam, stack) == set() and _record(server, stack) is None
    out = _deploy(server, template, stack)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: Queue (AWS::SQS::Queue)" in out.stdout and "line 3" in out.stdout
    answer = json.loads(lam.invoke(FunctionName=f"{stack}-Fn")["Payload"].read())
    assert answer["queue"] == f"{stack}-Queue"
    assert answer["arn"].startswith("arn:aws:sqs:us-east-1:000000000000:")
    events = server.client("events")
    rule = events.describe_rule(Name=f"{stack}-OnOrder")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["shop.orders"],
        "detail-type": ["OrderPlaced"],
    }
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"].endswith(f":function:{stack}-Fn")
    assert json.loads(target["Input"]) == {"from": "rule"}
    record = _record(server, stack)
    assert record is not None and record["Resources"]["Queue"]["status"] == "SKIPPED"
    assert lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0
    assert _function_names(lam, stack) == set()
    assert not [r for r in events.list_rules()["Rules"] if r["Name"].startswith(stack)]


def test_broken_template_names_the_resource_and_line(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(UNSUPPORTED.replace("!GetAtt Queue.Arn", "!GetAtt Missing.Arn"))
    stack = _stack()
    out = _deploy(server, template, stack)
    assert out.returncode != 0
    assert "Fn" in out.stderr and "line 5" in out.stderr and "Missing" in out.stderr, out.stderr
    assert "nothing was deployed" in out.stderr
    assert _function_names(lam, stack) == set() and _record(server, stack) is None
    bad_name = _deploy(server, template, "no_underscores")
    assert bad_name.returncode != 0 and "not a stack name" in bad_name.stderr


ROLLBACK = """\
AWSTemplateFormatVersion: '2010-09-09'
Parameters:
  SecondRuntime:
    Type: String
    Default: python3.12
  Timeout:
    Type: Number
    Default: 3
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      ManagedPolicyArns: [arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]
  First:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Timeout: !Ref Timeout
      Role: !GetAtt Role.Arn
      Code:
        ZipFile: "def handler(e, c):\\n    return 1\\n"
  Second:
    Type: AWS::Lambda::Function
    DependsOn: First
    Properties:
      Runtime: !Ref SecondRuntime
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code:
        ZipFile: "def handler(e, c):\\n    return 2\\n"
"""


def test_a_failed_deploy_rolls_back(server: Server, lam: Any, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(ROLLBACK)
    stack = _stack()
    # a first deploy that fails on its 3rd resource leaves nothing, and no stack
    out = _deploy(server, template, stack, "--parameter-overrides", "SecondRuntime=python0.1")
    assert out.returncode != 0
    assert "CREATE_FAILED" in out.stdout and "Second" in out.stdout
    assert "ROLLBACK_COMPLETE" in out.stdout and "rolled back" in out.stderr
    assert _function_names(lam, stack) == set() and _record(server, stack) is None
    roles = SIGNED_HTTP.get(f"{server.endpoint}/lamina/roles").json()["Roles"]
    assert not [r for r in roles if r["RoleName"].startswith(stack)]
    # an update that fails puts back what it changed, and keeps the stack as it was
    assert _deploy(server, template, stack).returncode == 0
    before = _record(server, stack)
    out = _deploy(
        server,
        template,
        stack,
        "--parameter-overrides",
        "Timeout=30 ParameterKey=SecondRuntime,ParameterValue=python0.1",
    )
    assert out.returncode != 0, out.stdout
    assert "UPDATE_ROLLBACK_COMPLETE" in out.stdout
    assert lam.get_function_configuration(FunctionName=f"{stack}-First")["Timeout"] == 3
    assert _record(server, stack) == before
    wait_for(lambda: lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0)
    assert _function_names(lam, stack) == set()


MISSING_PROPERTY = """\
Resources:
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.11
      Handler: index.handler
      Role: arn:aws:iam::000000000000:role/x
      Code:
        ZipFile: |
          def handler(event, context):
              return 1
  Perm:
    Type: AWS::Lambda::Permission
    DependsOn: Fn
    Properties:
      Action: lambda:InvokeFunction
      Principal: events.amazonaws.com
"""


def test_a_resource_missing_a_required_property_fails_clearly_and_rolls_back(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    # plain CloudFormation (no SAM transform checks it): the permission names no function
    template = tmp_path / "template.yaml"
    template.write_text(MISSING_PROPERTY)
    stack = _stack()
    out = _deploy(server, template, stack)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr
    assert "Perm: required property 'FunctionName' is missing" in out.stderr
    assert "DELETE_COMPLETE" in out.stdout and "ROLLBACK_COMPLETE" in out.stdout
    assert _function_names(lam, stack) == set() and _record(server, stack) is None


CANARY = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      InlineCode: |
        def handler(event, context):
            return "v1"
      AutoPublishAlias: live
      DeploymentPreference:
        Type: Canary10Percent5Minutes
"""


def test_deployment_preference_shifts_the_alias_in_steps(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(CANARY)
    stack = _stack()
    first = _deploy(server, template, stack)
    assert first.returncode == 0, first.stdout + first.stderr
    # SAM's CodeDeploy role names a managed policy Lamina has no use for: said, not hidden
    assert "AWSCodeDeployRoleForLambda" in first.stdout
    assert lam.get_alias(FunctionName=f"{stack}-Fn", Name="live")["FunctionVersion"] == "1"
    template.write_text(CANARY.replace('"v1"', '"v2"'))
    # a "minute" of 0.5 s (test-only): the canary holds 10 % for 2.5 s
    env = dict(lamina_env(server.endpoint), LAMINA_STACKS_SHIFT_SECONDS_PER_MINUTE="0.5")
    cmd = [sys.executable, "-m", "lamina", "deploy", "--template", str(template)]
    with subprocess.Popen(
        [*cmd, "--stack", stack], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:

        def canary() -> dict[str, Any] | None:
            alias: dict[str, Any] = lam.get_alias(FunctionName=f"{stack}-Fn", Name="live")
            weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
            return alias if weights else None

        during = wait_for(canary, timeout=30, message="the canary weight")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out + err).decode()
    assert during["FunctionVersion"] == "1"
    assert during["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}
    assert b"10% of traffic on version 2" in out
    after = lam.get_alias(FunctionName=f"{stack}-Fn", Name="live")
    assert after["FunctionVersion"] == "2" and not after.get("RoutingConfig")
    assert json.loads(lam.invoke(FunctionName=f"{stack}-Fn:live")["Payload"].read()) == "v2"
    assert lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0


LOCAL_ROLLBACK = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  SecondRuntime:
    Type: String
    Default: python3.12
Resources:
  First:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.12
  Second:
    Type: AWS::Serverless::Function
    DependsOn: First
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: !Ref SecondRuntime
"""


def test_a_failed_update_puts_the_old_code_back(server: Server, lam: Any, tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(LOCAL_ROLLBACK)
    code = tmp_path / "src" / "app.py"
    code.parent.mkdir()
    code.write_text("def handler(event, context):\n    return 'old'\n")
    stack = _stack()
    assert _deploy(server, tmp_path / "template.yaml", stack).returncode == 0
    before = _record(server, stack)
    # the directory now holds new code; the update fails on Second's runtime, after First's
    # code and Second's were replaced: both get the old package back, downloaded beforehand
    code.write_text("def handler(event, context):\n    return 'new'\n")
    out = _deploy(
        server,
        tmp_path / "template.yaml",
        stack,
        "--parameter-overrides",
        "SecondRuntime=python0.1",
    )
    assert out.returncode != 0 and "UPDATE_ROLLBACK_COMPLETE" in out.stdout, out.stdout
    assert "UPDATE_ROLLBACK_FAILED" not in out.stdout, out.stdout
    for name in ("First", "Second"):
        answer = lam.invoke(FunctionName=f"{stack}-{name}")["Payload"].read()
        assert json.loads(answer) == "old", name
    assert lam.get_function_configuration(FunctionName=f"{stack}-Second")["Runtime"] == (
        "python3.12"
    )
    assert _record(server, stack) == before
    # and the same edit, deployed without the fault, goes through
    assert _deploy(server, tmp_path / "template.yaml", stack).returncode == 0
    assert json.loads(lam.invoke(FunctionName=f"{stack}-First")["Payload"].read()) == "new"
    assert lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0


def test_a_route_held_by_something_else_fails_the_api_and_rolls_back(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    lam.create_function(
        FunctionName=owner,
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/lamina-function",
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return 1\n"})},
    )
    added = lamina("routes", "add", "GET /hello", owner, endpoint=server.endpoint)
    assert added.returncode == 0, added.stderr
    try:
        root = _copy("hello-python", tmp_path)
        stack = _stack()
        out = _deploy(server, root / "template.yaml", stack)
        assert out.returncode != 0
        assert "route GET /hello is already served" in out.stderr, out.stderr
        assert "ServerlessRestApi" in out.stderr and "ROLLBACK_COMPLETE" in out.stdout
        assert _routes(server)["GET /hello"] == owner
        assert _function_names(lam, stack) == set() and _record(server, stack) is None
    finally:
        lamina("routes", "rm", "GET /hello", endpoint=server.endpoint)
        lam.delete_function(FunctionName=owner)


def test_deploy_stack_tells_lamina_dev_each_function(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deploy_stack` called in-process (as `lamina dev` does): its DeployResult names each
    function, its code directory, alias, handler and runtime."""
    from lamina.cli.main import Api
    from lamina.stacks.provision import delete_stack, deploy_stack

    for key, value in lamina_env(server.endpoint).items():
        if key.startswith(("AWS_", "LAMINA_")):
            monkeypatch.setenv(key, value)
    app = _copy("app", tmp_path)
    stack = _stack()
    lines: list[str] = []
    api = Api(server.endpoint)
    try:
        result = deploy_stack(api, app / "template.yaml", stack=stack, echo=lines.append)
        assert result.stack == stack
        assert result.outputs["CronFunctionName"] == f"{stack}-CronFunction"
        found = {f.logical_id: f for f in result.functions}
        assert set(found) == {"ApiFunction", "CronFunction", "UrlFunction"}
        api_fn = found["ApiFunction"]
        assert api_fn.function_name == f"{stack}-ApiFunction"
        assert api_fn.code_dir == (app / "src" / "api").resolve()
        assert (api_fn.alias, api_fn.handler, api_fn.runtime) == (
            "live",
            "app.handler",
            "python3.12",
        )
        assert found["CronFunction"].alias is None
        assert any("CREATE_COMPLETE" in line and "UrlFunction" in line for line in lines)
        delete_stack(api, stack, echo=lines.append)
        assert _record(server, stack) is None
    finally:
        api._client.close()


PROVISIONED = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      InlineCode: |
        def handler(event, context):
            return "warm"
      AutoPublishAlias: live
      ProvisionedConcurrencyConfig:
        ProvisionedConcurrentExecutions: 1
"""


def test_provisioned_concurrency_on_the_alias(server: Server, lam: Any, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(PROVISIONED)
    stack = _stack()
    out = _deploy(server, template, stack)
    assert out.returncode == 0, out.stdout + out.stderr
    fn = f"{stack}-Fn"
    config = lam.get_provisioned_concurrency_config(FunctionName=fn, Qualifier="live")
    assert config["RequestedProvisionedConcurrentExecutions"] == 1
    # taken out of the template: the configuration goes
    template.write_text(PROVISIONED.split("      ProvisionedConcurrencyConfig:")[0])
    out = _deploy(server, template, stack)
    assert out.returncode == 0, out.stdout + out.stderr
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=fn, Qualifier="live")
    assert json.loads(lam.invoke(FunctionName=f"{fn}:live")["Payload"].read()) == "warm"
    assert lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0
