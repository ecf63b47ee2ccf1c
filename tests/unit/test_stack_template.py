"""The template layer of `lamina deploy --template`: reading, SAM transform, parameters,
conditions, dependencies and intrinsic functions (`lamina.stacks.template` / `.intrinsics`)."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lamina.stacks import Physical, Template, TemplateError
from lamina.stacks.intrinsics import Resolver
from lamina.stacks.template import deployment_order, load_template, managed_policy_map

SAM = Path(__file__).resolve().parents[1] / "fixtures" / "sam"
REGION = "eu-west-1"
ACCOUNT = "123456789012"


def load(path: Path, overrides: dict[str, str] | None = None, stack: str = "demo") -> Template:
    return load_template(path, overrides or {}, stack_name=stack, region=REGION, account_id=ACCOUNT)


def write(tmp_path: Path, text: str, name: str = "template.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def error_of(path: Path, overrides: dict[str, str] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        load(path, overrides)
    return caught.value


# -- AWS's SAM hello world ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "code", "handler", "runtime"),
    [
        ("hello-python", "hello_world", "app.lambda_handler", "python3.12"),
        ("hello-node", "hello-world", "app.lambdaHandler", "nodejs20.x"),
    ],
)
def test_hello_world_transforms_into_cloudformation(
    app: str, code: str, handler: str, runtime: str
) -> None:
    path = SAM / app / "template.yaml"
    template = load(path)

    types = {logical_id: r.type for logical_id, r in template.resources.items()}
    deployments = [i for i in types if i.startswith("ServerlessRestApiDeployment")]
    assert len(deployments) == 1
    assert types == {
        "HelloWorldFunction": "AWS::Lambda::Function",
        "HelloWorldFunctionRole": "AWS::IAM::Role",
        "HelloWorldFunctionHelloWorldPermissionProd": "AWS::Lambda::Permission",
        "ServerlessRestApi": "AWS::ApiGateway::RestApi",
        deployments[0]: "AWS::ApiGateway::Deployment",
        "ServerlessRestApiProdStage": "AWS::ApiGateway::Stage",
    }
    function = template.resources["HelloWorldFunction"].properties
    assert function["Handler"] == handler
    assert function["Runtime"] == runtime
    assert function["Timeout"] == 3  # from Globals
    code_dir = (SAM / app / code).resolve()
    assert function["Code"] == {"LaminaLocalPath": str(code_dir)}
    assert template.code_dirs == {"HelloWorldFunction": code_dir}
    role = template.resources["HelloWorldFunctionRole"].properties
    assert role["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]

    # every generated resource points back at the SAM function and its line
    function_line = line_of(path, "  HelloWorldFunction:")
    for resource in template.resources.values():
        assert resource.source == "HelloWorldFunction", resource.logical_id
        assert resource.line == function_line, resource.logical_id
    assert template.resources["HelloWorldFunction"].depends_on == {"HelloWorldFunctionRole"}
    assert template.resources["HelloWorldFunctionHelloWorldPermissionProd"].depends_on == {
        "HelloWorldFunction",
        "ServerlessRestApi",
    }

    order = deployment_order(template)
    assert sorted(order) == sorted(template.resources)
    for resource in template.resources.values():
        assert all(
            order.index(dep) < order.index(resource.logical_id) for dep in resource.depends_on
        )

    physical = {
        "ServerlessRestApi": Physical("abc123"),
        "HelloWorldFunction": Physical(
            "demo-HelloWorldFunction", {"Arn": "arn:fn:HelloWorldFunction"}
        ),
        "HelloWorldFunctionRole": Physical("demo-role", {"Arn": "arn:role"}),
    }
    assert Resolver(template).resolve_outputs(physical) == {
        "HelloWorldApi": f"https://abc123.execute-api.{REGION}.amazonaws.com/Prod/hello/",
        "HelloWorldFunction": "arn:fn:HelloWorldFunction",
        "HelloWorldFunctionIamRole": "arn:role",
    }
    permission = template.resources["HelloWorldFunctionHelloWorldPermissionProd"]
    assert Resolver(template).resolve(permission.properties, physical) == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": "demo-HelloWorldFunction",
        "Principal": "apigateway.amazonaws.com",
        "SourceArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:abc123/*/GET/hello",
    }


def test_managed_policy_map_paths() -> None:
    policies = managed_policy_map()
    assert policies["AWSLambdaBasicExecutionRole"] == (
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    )
    assert policies["AmazonS3ReadOnlyAccess"] == "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"


# -- the larger app: parameters, mappings, conditions, layers, aliases ----------------------

APP = SAM / "app" / "template.yaml"


def test_app_defaults() -> None:
    template = load(APP)
    assert template.parameters == {
        "Stage": "dev",
        "GreetingPrefix": "Hello",
        "ScheduleRate": "rate(5 minutes)",
        "EnableUrl": "true",
    }
    assert template.conditions == {"IsProd": False, "UrlEnabled": True}
    types = sorted({r.type for r in template.resources.values()})
    assert types == [
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::Events::Rule",
        "AWS::IAM::Role",
        "AWS::Lambda::Alias",
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::Permission",
        "AWS::Lambda::Url",
        "AWS::Lambda::Version",
    ]
    (layer_id,) = [
        i for i, r in template.resources.items() if r.type == "AWS::Lambda::LayerVersion"
    ]
    layer = template.resources[layer_id]
    assert layer.source == "CommonLayer"
    assert layer.line == line_of(APP, "  CommonLayer:")
    assert layer.properties["Content"] == {"LaminaLocalPath": str(APP.parent / "layers" / "common")}
    assert Resolver(template).resolve(layer.properties["LayerName"], {}) == "demo-common"
    assert layer.deletion_policy == "Retain"

    api = template.resources["ApiFunction"]
    assert api.properties["Layers"] == [{"Ref": layer_id}]
    assert layer_id in api.depends_on
    assert template.resources["CronFunction"].depends_on == {"CronRole"}
    assert template.resources["CronRole"].source is None
    assert template.resources["CronRole"].line == line_of(APP, "  CronRole:")
    assert template.resources["ServerlessHttpApi"].source == "ApiFunction"
    assert template.resources["ApiFunctionAliaslive"].properties["Name"] == "live"
    assert set(template.code_dirs) == {"ApiFunction", "CronFunction", "UrlFunction"}

    resolver = Resolver(template)
    physical = {layer_id: Physical("arn:layer:1"), "ApiFunctionRole": Physical("r", {"Arn": "a"})}
    resolved = resolver.resolve(api.properties, physical)
    assert resolved["MemorySize"] == 128
    assert resolved["Layers"] == ["arn:layer:1"]
    assert resolved["Environment"]["Variables"] == {
        "STAGE": "dev",
        "LOG_LEVEL": "DEBUG",
        "GREETING_PREFIX": "Hello",
    }
    url_env = resolver.resolve(
        template.resources["UrlFunction"].properties["Environment"],
        {"ApiFunction": Physical("demo-ApiFunction")},
    )
    assert url_env == {
        "Variables": {
            "API_FUNCTION": "demo-ApiFunction",
            "EXTRA": "dev-only",
            **{"STAGE": "dev", "LOG_LEVEL": "DEBUG"},
        }
    }

    order = deployment_order(template)
    for resource in template.resources.values():
        assert all(
            order.index(dep) < order.index(resource.logical_id) for dep in resource.depends_on
        )


def test_app_overrides_and_conditions() -> None:
    template = load(APP, {"Stage": "prod", "EnableUrl": "false"})
    assert template.conditions == {"IsProd": True, "UrlEnabled": False}
    assert not [i for i in template.resources if i.startswith("UrlFunction")]
    assert "UrlFunction" not in template.code_dirs
    assert "FunctionUrl" not in template.outputs
    resolver = Resolver(template)
    memory = resolver.resolve(template.resources["CronFunction"].properties["MemorySize"], {})
    assert memory == 256
    outputs = resolver.resolve_outputs(
        {
            "ServerlessHttpApi": Physical("h77"),
            "ApiFunction": Physical("fn", {"Arn": "arn:fn"}),
            "ApiFunctionAliaslive": Physical("arn:fn:live"),
            "CronFunction": Physical("demo-cron"),
            **{i: Physical("arn:layer:3") for i in template.resources if i.startswith("Common")},
        }
    )
    assert outputs == {
        "HttpApiUrl": f"https://h77.execute-api.{REGION}.amazonaws.com/",
        "ApiFunctionArn": "arn:fn",
        "ApiFunctionAliasArn": "arn:fn:live",
        "CronFunctionName": "demo-cron",
        "LayerArn": "arn:layer:3",
    }
    assert resolver.resolve(template.outputs["CronFunctionName"]["Export"], {}) == {
        "Name": "demo-cron"
    }


@pytest.mark.parametrize(
    ("overrides", "message", "parameter"),
    [
        ({"Stage": "qa"}, "'qa' is not one of the AllowedValues", "Stage"),
        ({"GreetingPrefix": ""}, "shorter than MinLength 1", "GreetingPrefix"),
        ({"ScheduleRate": "every minute"}, "does not match", "ScheduleRate"),
        ({"Nope": "1"}, "parameter Nope is not declared", None),
    ],
)
def test_app_bad_parameters(overrides: dict[str, str], message: str, parameter: str | None) -> None:
    error = error_of(APP, overrides)
    assert message in error.message
    if parameter:
        assert error.message.startswith(f"parameter {parameter}:")
        assert error.line == line_of(APP, f"  {parameter}:")


def test_parameter_types_and_missing_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Parameters:
          Count: {Type: Number, MinValue: 1, MaxValue: 5, Default: 2}
          Subnets: {Type: CommaDelimitedList, Default: "a, b,c"}
          Sizes: {Type: List<Number>, Default: "1,2"}
          Vpc: {Type: "AWS::EC2::VPC::Id", Default: vpc-1}
          Secret: {Type: String, NoEcho: true}
        Resources:
          Topic:
            Type: AWS::SNS::Topic
            Properties:
              TopicName: !Join ["-", !Ref Subnets]
        """,
    )
    error = error_of(path)
    assert "parameter Secret has no Default" in error.message
    assert error.line == 6
    template = load(path, {"Secret": "s3cret"})
    assert template.parameters == {
        "Count": "2",
        "Subnets": ["a", "b", "c"],
        "Sizes": ["1", "2"],
        "Vpc": "vpc-1",
        "Secret": "s3cret",
    }
    resolved = Resolver(template).resolve(template.resources["Topic"].properties, {})
    assert resolved == {"TopicName": "a-b-c"}
    assert "is greater than MaxValue 5" in error_of(path, {"Secret": "", "Count": "9"}).message
    assert "'x' is not a number" in error_of(path, {"Secret": "", "Sizes": "1,x"}).message


# -- intrinsic functions -------------------------------------------------------------------

INTRINSICS = """
Parameters:
  Env: {Type: String, Default: dev}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
Mappings:
  Sizes:
    dev: {Memory: 128}
    prod: {Memory: 1024}
Conditions:
  IsDev: !Equals [!Ref Env, dev]
  IsProd: !Not [!Condition IsDev]
  Both: !And [!Condition IsDev, !Equals [a, a]]
  Either: !Or [!Condition IsProd, !Equals ["1", 1]]
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Sub1: !Sub "${AWS::StackName}-${Env}-${Queue}-${Queue.Arn}-${!Literal}"
      Sub2: !Sub ["${Prefix}/${AWS::Region}", {Prefix: !Ref Env}]
      Join: !Join [":", [x, !Ref Env, !GetAtt Queue.Arn]]
      Select: !Select [1, !Ref Names]
      Split: !Split [",", "p,q"]
      Memory: !FindInMap [Sizes, !Ref Env, Memory]
      B64: !Base64 "hi there"
      AZ: !Select [0, !GetAZs ""]
      Cidr: !Cidr ["10.0.0.0/16", 2, 8]
      IfValue: !If [IsProd, big, small]
      Dropped: !If [IsDev, !Ref AWS::NoValue, kept]
      List: [one, !If [IsDev, !Ref "AWS::NoValue", two], three]
      Flags: [!If [Both, y, n], !If [Either, y, n], yes, on, true]
      Pseudo: [!Ref AWS::AccountId, !Ref AWS::Partition, !Ref AWS::URLSuffix, !Ref AWS::StackId]
      Notify: !Ref AWS::NotificationARNs
      Version: 2012-10-17
      GetAttList: !GetAtt [Queue, QueueName]
"""


def test_every_intrinsic(tmp_path: Path) -> None:
    template = load(write(tmp_path, INTRINSICS))
    assert template.conditions == {"IsDev": True, "IsProd": False, "Both": True, "Either": True}
    function = template.resources["Function"]
    assert function.depends_on == {"Queue"}
    physical = {"Queue": Physical("https://q/url", {"Arn": "arn:q", "QueueName": "q1"})}
    resolved = Resolver(template).resolve(function.properties, physical)
    stack_id = resolved["Pseudo"].pop()
    assert stack_id.startswith(f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/demo/")
    assert resolved == {
        "Sub1": "demo-dev-https://q/url-arn:q-${Literal}",
        "Sub2": f"dev/{REGION}",
        "Join": "x:dev:arn:q",
        "Select": "b",
        "Split": ["p", "q"],
        "Memory": 128,
        "B64": base64.b64encode(b"hi there").decode(),
        "AZ": f"{REGION}a",
        "Cidr": ["10.0.0.0/24", "10.0.1.0/24"],
        "IfValue": "small",
        "List": ["one", "three"],
        "Flags": ["y", "y", "yes", "on", True],  # YAML 1.1's yes/on stay strings
        "Pseudo": [ACCOUNT, "aws", "amazonaws.com"],
        "Notify": [],
        "Version": "2012-10-17",
        "GetAttList": "q1",
    }
    # the stack id is stable for a stack name
    assert load(write(tmp_path, INTRINSICS)).pseudo["AWS::StackId"] == stack_id


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Fn::GetAtt": ["Queue", "Nope"]}, "Fn::GetAtt Queue.Nope: no such attribute"),
        ({"Fn::ImportValue": "shared"}, "Fn::ImportValue is not supported"),
        ({"Ref": "Other"}, "Ref to Other"),
        ({"Fn::FindInMap": ["Sizes", "qa", "Memory"]}, "no key 'qa' in Sizes"),
        ({"Fn::Select": [5, ["a"]]}, "index 5 out of range"),
        ({"Fn::Length": [1]}, "Fn::Length is not supported"),
    ],
)
def test_resolve_errors(tmp_path: Path, value: Any, message: str) -> None:
    template = load(write(tmp_path, INTRINSICS))
    with pytest.raises(TemplateError, match=message):
        Resolver(template).resolve(value, {"Queue": Physical("q", {"Arn": "arn:q"})})


# -- dependencies and order ----------------------------------------------------------------


def test_dependencies_and_stable_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Parameters:
          P: {Type: String, Default: x}
        Conditions:
          Yes: !Equals [a, a]  # a name, not YAML 1.1's boolean
        Resources:
          D:
            Type: AWS::SNS::Topic
            Properties:
              Name: !Sub "${C}-${B.Arn}-${!A}-${P}-${AWS::Region}"
          C:
            Type: AWS::SNS::Topic
            DependsOn: [A]
          B:
            Type: AWS::SNS::Topic
            DependsOn: A
            Properties:
              Name: !If [Yes, !Ref E, !Ref C]
          A:
            Type: AWS::SNS::Topic
          E:
            Type: AWS::SNS::Topic
        """,
    )
    template = load(path)
    deps = {i: r.depends_on for i, r in template.resources.items()}
    assert deps == {"D": {"B", "C"}, "C": {"A"}, "B": {"A", "E"}, "A": set(), "E": set()}
    assert deployment_order(template) == ["A", "C", "E", "B", "D"]


def test_cycle_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Resources:
          Free:
            Type: AWS::SNS::Topic
          A:
            Type: AWS::SNS::Topic
            Properties: {Name: !GetAtt B.TopicName}
          B:
            Type: AWS::SNS::Topic
            Properties: {Name: !Sub "${C}"}
          C:
            Type: AWS::SNS::Topic
            DependsOn: A
        """,
    )
    template = load(path)
    with pytest.raises(TemplateError) as caught:
        deployment_order(template)
    assert "cycle: A -> B -> C -> A" in caught.value.message
    assert caught.value.line == 4


# -- errors say where ------------------------------------------------------------------------


def test_broken_yaml_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Resources:\n  A:\n    Type: AWS::SNS::Topic\n   Properties: [\n")
    error = error_of(path)
    assert error.message.startswith("invalid YAML/JSON")
    assert error.line is not None and error.line >= 4


def test_unknown_tag_and_duplicate_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, "Resources:\n  A:\n    Type: AWS::SNS::Topic\n    Properties: !Magic x\n"
    )
    error = error_of(path)
    assert (error.message, error.line) == ("unknown tag !Magic", 4)
    path = write(tmp_path, "Resources:\n  A:\n    Type: AWS::SNS::Topic\n  A:\n    Type: X\n")
    error = error_of(path)
    assert "duplicate key 'A' (first written on line 2)" in error.message
    assert error.line == 4


def test_reference_to_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Resources:
          A:
            Type: AWS::SNS::Topic
          B:
            Type: AWS::SNS::Topic
            Properties:
              Name: !Sub "${Ghost.Arn}"
        Outputs:
          Out:
            Value: !Ref Phantom
        """,
    )
    error = error_of(path)
    assert "refers to Ghost" in error.message
    assert (error.logical_id, error.line) == ("B", 4)
    assert "line 4" in str(error)
    path.write_text(path.read_text().replace("${Ghost.Arn}", "${A.Arn}"))
    error = error_of(path)
    assert "output Out refers to Phantom" in error.message
    assert error.line == 9


def test_reference_to_a_resource_left_out_by_its_condition(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Conditions:
          Never: !Equals [a, b]
        Resources:
          A:
            Type: AWS::SNS::Topic
            Condition: Never
          B:
            Type: AWS::SNS::Topic
            Properties:
              Ok: !If [Never, !Ref A, none]
              Bad: !Ref A
        """,
    )
    error = error_of(path)
    assert "B refers to A, which its condition Never leaves out" in error.message
    assert error.line == 7


def test_sam_translator_error_names_resource_and_line(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    path = write(
        tmp_path,
        """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Good:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: src/, Handler: app.h, Runtime: python3.12}
          Broken:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: src/
              Handler: app.h
              Runtime: python3.12
              Events:
                Hi:
                  Type: Api
                  Properties: {Method: get}
        """,
    )
    error = error_of(path)
    assert error.message.startswith("SAM transform failed: Resource with id [Broken] is invalid.")
    assert (error.logical_id, error.line) == ("Broken", 6)


def test_missing_code_uri(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function: {Runtime: python3.12, Handler: app.h}
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: missing/}
        """,
    )
    error = error_of(path)
    assert error.message.startswith("CodeUri missing/ does not exist")
    assert (error.logical_id, error.line) == ("Fn", 5)


def test_inline_code_s3_code_and_globals_code_uri(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    path = write(
        tmp_path,
        """
        {
          "Transform": ["AWS::Serverless-2016-10-31"],
          "Globals": {"Function": {"CodeUri": "shared", "Runtime": "python3.12",
                                   "Handler": "app.h"}},
          "Resources": {
            "Inline": {"Type": "AWS::Serverless::Function",
                       "Properties": {"InlineCode": "def h(e, c): return 1"}},
            "FromS3": {"Type": "AWS::Serverless::Function",
                       "Properties": {"CodeUri": "s3://bucket/key.zip"}},
            "Shared": {"Type": "AWS::Serverless::Function"}
          }
        }
        """,
        name="template.json",
    )
    template = load(path)
    code = {i: r.properties.get("Code") for i, r in template.resources.items()}
    assert code["Inline"] == {"ZipFile": "def h(e, c): return 1"}
    assert code["FromS3"] == {"S3Bucket": "bucket", "S3Key": "key.zip"}
    assert code["Shared"] == {"LaminaLocalPath": str(tmp_path / "shared")}
    assert template.code_dirs == {"Shared": tmp_path / "shared"}
    assert template.resources["Shared"].line == 10


def test_json_with_tabs_and_duplicate_keys(tmp_path: Path) -> None:
    text = (
        '{\n\t"Resources": {\n\t\t"A": {"Type": "AWS::SNS::Topic",\n'
        '\t\t\t"Properties": {}}\n\t}\n}\n'
    )
    template = load(write(tmp_path, text, name="t.json"))
    assert template.resources["A"].type == "AWS::SNS::Topic"
    assert template.resources["A"].line == 3
    text = '{"Resources": {"A": {"Type": "X"},\n "A": {"Type": "Y"}}}'
    error = error_of(write(tmp_path, text, name="t.json"))
    assert "duplicate key 'A'" in error.message
    assert error.line == 2


def test_plain_cloudformation_with_local_code(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    path = write(
        tmp_path,
        """
        Resources:
          Fn:
            Type: AWS::Lambda::Function
            Properties: {Code: fn, Handler: app.h, Runtime: python3.12, Role: arn:aws:iam::1:role/r}
        """,
    )
    template = load(path)
    assert template.resources["Fn"].properties["Code"] == {"LaminaLocalPath": str(tmp_path / "fn")}
    assert template.resources["Fn"].source is None
    assert template.code_dirs == {}


def test_unsupported_transform(tmp_path: Path) -> None:
    path = write(tmp_path, "Transform: AWS::Include\nResources:\n  A: {Type: AWS::SNS::Topic}\n")
    assert "Transform 'AWS::Include' is not supported" in error_of(path).message


def test_resolve_resource_names_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Resources:
          A:
            Type: AWS::SNS::Topic
          B:
            Type: AWS::SNS::Topic
            Properties: {Name: !GetAtt A.Nope}
        """,
    )
    template = load(path)
    with pytest.raises(TemplateError) as caught:
        Resolver(template).resolve_resource(template.resources["B"], {"A": Physical("a")})
    assert caught.value.message == "B: Fn::GetAtt A.Nope: no such attribute (it has: none)"
    assert (caught.value.logical_id, caught.value.line) == ("B", 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Resources:\n  A: {Type: X, DependsOn: [[1]]}", "DependsOn takes a name or a list"),
        (
            "Parameters:\n  P: {Type: String, Default: a, AllowedPattern: '('}\n"
            "Resources:\n  A: {Type: X}",
            "parameter P: invalid declaration",
        ),
        ("Resources:\n  ? [a]\n  : {Type: X}", "a mapping key must be a string"),
        ("Conditions:\n  C: !Condition D\n  D: !Condition C\nResources:\n  A: {Type: X}", "cycle"),
        ("Resources: {}", "the template has no Resources"),
    ],
)
def test_malformed_templates(tmp_path: Path, text: str, message: str) -> None:
    assert message in error_of(write(tmp_path, text)).message


def test_auto_publish_alias_version_follows_the_code(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text("def h(e, c):\n    return 1\n")
    path = write(
        tmp_path,
        """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: src, Handler: app.h, Runtime: python3.12, AutoPublishAlias: live}
        """,
    )

    def version_id() -> str:
        (found,) = [i for i, r in load(path).resources.items() if r.type == "AWS::Lambda::Version"]
        return found

    first = version_id()
    assert version_id() == first
    (code / "app.py").write_text("def h(e, c):\n    return 2\n")
    assert version_id() != first


def test_nested_application_is_refused_without_asking_aws(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Nested:
            Type: AWS::Serverless::Application
            Properties:
              Location:
                ApplicationId: arn:aws:serverlessrepo:us-east-1:123456789012:applications/x
                SemanticVersion: 1.0.0
        """,
    )
    error = error_of(path)
    assert "AWS::Serverless::Application (a nested application) is not supported" in error.message
    assert (error.logical_id, error.line) == ("Nested", 3)
