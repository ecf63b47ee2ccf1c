"""SnapStart through boto3 against a real server: `SnapStart` on create and update, what every
configuration answer says of it, Lambda's rules on what it combines with, and the states of a
published version. (Restoring real snapshots: the sandbox backends' own tests.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, Functions, Server, lamina, make_zip, wait_for

pytestmark = pytest.mark.control_plane

HELLO = "def handler(event, context):\n    return 1\n"
ON = {"ApplyOn": "PublishedVersions"}


def _error(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    err = raised.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _create(lam: Any, runtime: str = "python3.12", **kwargs: Any) -> dict[str, Any]:
    resp: dict[str, Any] = lam.create_function(
        FunctionName=kwargs.pop("FunctionName", f"snap-{uuid.uuid4().hex[:10]}"),
        Runtime=runtime,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": kwargs.pop("code", HELLO)})},
        **kwargs,
    )
    return resp


def test_snapstart_is_set_on_create_and_update_and_reported(functions: Functions, lam: Any) -> None:
    created = functions.create(HELLO, runtime="python3.12", SnapStart=ON)
    name = created["FunctionName"]
    assert created["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    latest = lam.get_function_configuration(FunctionName=name)
    assert latest["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    assert latest["State"] == "Active", "$LATEST is never snapshotted"
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200

    plain = functions.create(HELLO, runtime="python3.12")["FunctionName"]
    assert lam.get_function(FunctionName=plain)["Configuration"]["SnapStart"] == {
        "ApplyOn": "None",
        "OptimizationStatus": "Off",
    }
    updated = lam.update_function_configuration(FunctionName=plain, SnapStart=ON)
    assert updated["SnapStart"]["ApplyOn"] == "PublishedVersions"
    lam.get_waiter("function_updated_v2").wait(FunctionName=plain)
    off = lam.update_function_configuration(FunctionName=plain, SnapStart={"ApplyOn": "None"})
    assert off["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}


def test_a_bad_apply_on_is_a_validation_error(lam: Any) -> None:
    code, text, status = _error(lambda: _create(lam, SnapStart={"ApplyOn": "Always"}))
    assert (code, status) == ("ValidationException", 400)
    assert text == (
        "1 validation error detected: Value 'Always' at 'snapStart.applyOn' failed to satisfy "
        "constraint: Member must satisfy enum value set: [PublishedVersions, None]"
    )


def test_what_snapstart_does_not_combine_with(functions: Functions, lam: Any) -> None:
    code, text, status = _error(lambda: _create(lam, runtime="python3.11", SnapStart=ON))
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert text.startswith("python3.11 is not supported for SnapStart enabled functions.")
    assert "Python runtimes only" in text
    code, text, _ = _error(lambda: _create(lam, runtime="nodejs20.x", SnapStart=ON))
    assert code == "InvalidParameterValueException" and text.startswith("nodejs20.x is not")
    code, text, _ = _error(lambda: _create(lam, SnapStart=ON, EphemeralStorage={"Size": 1024}))
    assert code == "InvalidParameterValueException"
    assert "ephemeral storage greater than 512 MB" in text
    code, text, _ = _error(
        lambda: lam.create_function(
            FunctionName=f"snap-{uuid.uuid4().hex[:10]}",
            Role=ROLE,
            PackageType="Image",
            Code={"ImageUri": "127.0.0.1:1/app:1"},
            SnapStart=ON,
        )
    )
    assert code == "InvalidParameterValueException" and "PackageType Image" in text
    efs = [
        {
            "Arn": "arn:aws:elasticfilesystem:us-east-1:000000000000:access-point/fsap-1",
            "LocalMountPath": "/mnt/efs",
        }
    ]
    code, text, _ = _error(lambda: _create(lam, SnapStart=ON, FileSystemConfigs=efs))
    assert code == "InvalidParameterValueException" and "FileSystemConfigs" in text

    # An update may not make an existing SnapStart function invalid, nor the reverse.
    name = functions.create(HELLO, runtime="python3.12", SnapStart=ON)["FunctionName"]
    code, text, _ = _error(
        lambda: lam.update_function_configuration(
            FunctionName=name, EphemeralStorage={"Size": 2048}
        )
    )
    assert code == "InvalidParameterValueException" and "512 MB" in text
    code, _, _ = _error(
        lambda: lam.update_function_configuration(FunctionName=name, Runtime="python3.11")
    )
    assert code == "InvalidParameterValueException"
    big = functions.create(HELLO, runtime="python3.12", EphemeralStorage={"Size": 1024})
    code, _, _ = _error(
        lambda: lam.update_function_configuration(FunctionName=big["FunctionName"], SnapStart=ON)
    )
    assert code == "InvalidParameterValueException"
    assert lam.get_function_configuration(FunctionName=name)["EphemeralStorage"]["Size"] == 512


def test_a_published_version_is_pending_then_settles(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO, runtime="python3.12", SnapStart=ON)["FunctionName"]
    published = lam.publish_version(FunctionName=name)
    assert published["Version"] == "1"
    assert published["State"] == "Pending"
    assert published["StateReasonCode"] == "Creating"
    assert published["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    settled = wait_for(
        lambda: (
            c
            if (c := lam.get_function_configuration(FunctionName=name, Qualifier="1"))["State"]
            != "Pending"
            else None
        ),
        message="the version to leave Pending",
    )
    assert settled["State"] in ("Active", "Failed")
    assert settled["SnapStart"]["OptimizationStatus"] == "On"
    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["SnapStart"]["OptimizationStatus"] for v in listed] == ["Off", "On"]
    assert lam.get_function_configuration(FunctionName=name)["State"] == "Active"
    # Unchanged since version 1: publishing again gives it back, no second template.
    assert lam.publish_version(FunctionName=name)["Version"] == "1"


def test_a_version_whose_init_fails_is_failed(functions: Functions, lam: Any) -> None:
    broken = "raise RuntimeError('no config file')\ndef handler(event, context):\n    return 1\n"
    name = functions.create(broken, runtime="python3.12", SnapStart=ON, wait=False)["FunctionName"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    failed = wait_for(
        lambda: (
            c
            if (c := lam.get_function_configuration(FunctionName=name, Qualifier="1"))["State"]
            == "Failed"
            else None
        ),
        message="the version to fail",
    )
    assert failed["StateReasonCode"].startswith("FunctionError")
    assert failed["StateReason"].startswith("Lambda could not create the SnapStart snapshot")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("1", "live"):
        code, text, status = _error(lambda q=qualifier: lam.invoke(FunctionName=name, Qualifier=q))
        assert (code, status) == ("ResourceConflictException", 409)
        assert text.endswith("The function is currently in the following state: Failed")


def test_provisioned_concurrency_is_refused_on_a_snapstart_version(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(HELLO, runtime="python3.12", SnapStart=ON)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("1", "live"):
        code, text, status = _error(
            lambda q=qualifier: lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier=q, ProvisionedConcurrentExecutions=1
            )
        )
        assert (code, status) == ("InvalidParameterValueException", 400)
        assert "SnapStart" in text
    # A version published without SnapStart takes provisioned concurrency as usual.
    wait_for(
        lambda: (
            lam.get_function_configuration(FunctionName=name, Qualifier="1")["State"] != "Pending"
        ),
        message="version 1 to settle",
    )
    lam.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "None"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="2", ProvisionedConcurrentExecutions=1
    )
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="2")


SAM = """\
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
            return "restored"
      AutoPublishAlias: live
      SnapStart:
        ApplyOn: PublishedVersions
"""


def test_snapstart_in_a_sam_template(server: Server, lam: Any, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(SAM)
    stack = f"s-{uuid.uuid4().hex[:8]}"
    out = lamina("deploy", "--template", str(template), "--stack", stack, endpoint=server.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr
    fn = f"{stack}-Fn"
    assert lam.get_function_configuration(FunctionName=fn)["SnapStart"] == {
        "ApplyOn": "PublishedVersions",
        "OptimizationStatus": "Off",
    }
    version = lam.get_alias(FunctionName=fn, Name="live")["FunctionVersion"]
    published = lam.get_function_configuration(FunctionName=fn, Qualifier=version)
    assert published["SnapStart"]["OptimizationStatus"] == "On"
    # Taken out of the template: the function goes back to no SnapStart.
    template.write_text(SAM.replace("      SnapStart:\n        ApplyOn: PublishedVersions\n", ""))
    out = lamina("deploy", "--template", str(template), "--stack", stack, endpoint=server.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr
    assert lam.get_function_configuration(FunctionName=fn)["SnapStart"]["ApplyOn"] == "None"
    assert lamina("stacks", "delete", stack, endpoint=server.endpoint).returncode == 0
