"""Runtime management controls (Get/PutRuntimeManagementConfig) and FunctionConfiguration's
RuntimeVersionConfig, with boto3 against a real server: exact responses, AWS's errors, and
what a Manual pin does when the host's interpreter is no longer the pinned one."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import Functions, Server

pytestmark = pytest.mark.control_plane

ACCOUNT = "000000000000"
CODE = "def handler(event, context):\n    return {'ok': True}\n"
VERSION_ARN = re.compile(r"arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}")
OTHER_ARN = "arn:aws:lambda:us-east-1::runtime:" + "0" * 64


def _arn(name: str, qualifier: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}:{qualifier}"


def _body(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def _code(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_defaults_and_the_runtime_version_arn_from_the_host(functions: Functions, lam: Any) -> None:
    created = functions.create(CODE)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    assert VERSION_ARN.fullmatch(arn)
    assert _body(lam.get_runtime_management_config(FunctionName=name)) == {
        "UpdateRuntimeOn": "Auto",
        "FunctionArn": _arn(name, "$LATEST"),
    }
    # One ARN per runtime on this host: the same for every python3.11 function, in every
    # response that carries a FunctionConfiguration.
    other = functions.create(CODE)["FunctionName"]
    config = lam.get_function_configuration(FunctionName=other)
    assert config["RuntimeVersionConfig"] == {"RuntimeVersionArn": arn}
    listed = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert listed[0]["RuntimeVersionConfig"] == {"RuntimeVersionArn": arn}


def test_manual_pins_a_version_and_each_version_has_its_own(functions: Functions, lam: Any) -> None:
    created = functions.create(CODE)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    put = lam.put_runtime_management_config(
        FunctionName=name, UpdateRuntimeOn="Manual", RuntimeVersionArn=arn
    )
    assert _body(put) == {
        "UpdateRuntimeOn": "Manual",
        "FunctionArn": _arn(name, "$LATEST"),
        "RuntimeVersionArn": arn,
    }
    assert _body(lam.get_runtime_management_config(FunctionName=name, Qualifier="$LATEST")) == (
        _body(put)
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    assert _body(lam.get_runtime_management_config(FunctionName=name, Qualifier=version)) == {
        "UpdateRuntimeOn": "Auto",
        "FunctionArn": _arn(name, version),
    }
    put = lam.put_runtime_management_config(
        FunctionName=name, Qualifier=version, UpdateRuntimeOn="FunctionUpdate"
    )
    assert _body(put) == {"UpdateRuntimeOn": "FunctionUpdate", "FunctionArn": _arn(name, version)}
    assert lam.get_runtime_management_config(FunctionName=name)["UpdateRuntimeOn"] == "Manual"
    # A pinned $LATEST keeps its runtime.
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, Runtime="nodejs20.x")
    assert _code(e) == (
        "InvalidParameterValueException",
        "Cannot change runtime identifier when runtime management configuration is set to "
        "'Manual'. Change the runtime management configuration to 'Auto' or 'FunctionUpdate', "
        "then retry.",
    )
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == "python3.11"
    # Back to Auto drops the pin.
    lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Auto")
    assert "RuntimeVersionArn" not in lam.get_runtime_management_config(FunctionName=name)
    resp = lam.invoke(FunctionName=name)
    assert json.loads(resp["Payload"].read()) == {"ok": True}


def test_refusals(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    created = functions.create(CODE)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"UpdateRuntimeOn": "Manual"},
            "InvalidParameterValueException",
            "RuntimeVersionArn must be specified when UpdateRuntimeOn is Manual.",
        ),
        (
            {"UpdateRuntimeOn": "Auto", "RuntimeVersionArn": arn},
            "InvalidParameterValueException",
            "RuntimeVersionArn can only be specified when UpdateRuntimeOn is Manual.",
        ),
        (
            {"UpdateRuntimeOn": "Manual", "RuntimeVersionArn": OTHER_ARN},
            "InvalidParameterValueException",
            f"Runtime version {OTHER_ARN} is not a version of python3.11 available on this "
            f"host (available: {arn}).",
        ),
        (
            {"UpdateRuntimeOn": "Sometimes"},
            "ValidationException",
            "1 validation error detected: Value 'Sometimes' at 'updateRuntimeOn' failed to "
            "satisfy constraint: Member must satisfy enum value set: [Auto, Manual, "
            "FunctionUpdate]",
        ),
    ]
    for kwargs, code, message in cases:
        with pytest.raises(ClientError) as e:
            lam_unchecked.put_runtime_management_config(FunctionName=name, **kwargs)
        assert _code(e) == (code, message), kwargs
    with pytest.raises(ClientError) as e:
        lam_unchecked.put_runtime_management_config(
            FunctionName=name, UpdateRuntimeOn="Manual", RuntimeVersionArn="arn:nope"
        )
    assert _code(e)[0] == "ValidationException"
    # Nothing was stored by the refused calls.
    assert lam.get_runtime_management_config(FunctionName=name)["UpdateRuntimeOn"] == "Auto"
    with pytest.raises(ClientError) as e:
        lam.get_runtime_management_config(FunctionName=name, Qualifier="7")
    assert _code(e) == (
        "ResourceNotFoundException",
        f"Function not found: {_arn(name, '7')}",
    )
    with pytest.raises(ClientError) as e:
        lam.put_runtime_management_config(FunctionName="t-missing-fn", UpdateRuntimeOn="Auto")
    assert _code(e)[0] == "ResourceNotFoundException"


def test_a_pin_the_host_no_longer_runs_refuses_to_start(
    own_server: Callable[..., Server],
) -> None:
    srv = own_server()
    lam = srv.client()
    fns = Functions(lam)
    created = fns.create(CODE)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    lam.put_runtime_management_config(
        FunctionName=name, UpdateRuntimeOn="Manual", RuntimeVersionArn=arn
    )
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == {"ok": True}
    srv.stop()
    # As if the host's interpreter had been upgraded since the pin was set.
    db = sqlite3.connect(srv.data_dir / "lamina.db")
    with db:
        db.execute("UPDATE runtime_management SET runtime_version_arn = ?", (OTHER_ARN,))
    db.close()
    srv.start()
    config = lam.get_function_configuration(FunctionName=name)
    assert config["RuntimeVersionConfig"] == {"RuntimeVersionArn": OTHER_ARN}
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name)
    code, message = _code(e)
    assert code == "InvalidRuntimeException"
    assert OTHER_ARN in message and arn in message
    # Lifting the pin lets it run on the host's interpreter again.
    lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Auto")
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == {"ok": True}
    fns.cleanup()


def test_settings_go_with_the_function(functions: Functions, lam: Any) -> None:
    created = functions.create(CODE)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    lam.put_runtime_management_config(
        FunctionName=name, UpdateRuntimeOn="Manual", RuntimeVersionArn=arn
    )
    lam.delete_function(FunctionName=name)
    functions.create(CODE, FunctionName=name)
    assert _body(lam.get_runtime_management_config(FunctionName=name)) == {
        "UpdateRuntimeOn": "Auto",
        "FunctionArn": _arn(name, "$LATEST"),
    }
