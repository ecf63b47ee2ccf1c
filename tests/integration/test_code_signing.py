"""Code signing configurations through boto3 (the 9 operations, their exact answers and
errors), and the checks of deployed packages: Enforce refuses unsigned, tampered, untrusted,
expired and revoked packages and takes a validly signed one; Warn takes them and counts them."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.conftest import ROLE, Functions, Server, lamina, make_zip

from lamina import code_signature

pytestmark = pytest.mark.control_plane

ACCOUNT = "000000000000"
ARN = re.compile(r"arn:aws:lambda:us-east-1:000000000000:code-signing-config:(csc-[0-9a-f]{17})")
LAST_MODIFIED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
CODE = "def handler(event, context):\n    return {'v': %d}\n"


def _profile() -> str:
    return (
        f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/p{uuid.uuid4().hex[:10]}/"
        f"{uuid.uuid4().hex[:10]}"
    )


def _error(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = e.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


class Signer:
    """A signing profile version: a fresh key pair, trusted by the server through the CLI."""

    def __init__(self, server: Server, tmp: Path, kind: str = "ed25519") -> None:
        self.arn = _profile()
        self.key: code_signature.PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
            if kind == "ed25519"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.key_file = tmp / f"{uuid.uuid4().hex}.pem"
        self.key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.public_file = tmp / f"{uuid.uuid4().hex}.pub.pem"
        self.public_file.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.server = server

    def trust(self) -> Signer:
        out = lamina(
            "signers", "add", self.arn, str(self.public_file), endpoint=self.server.endpoint
        )
        assert out.returncode == 0, out.stderr
        return self

    def sign(self, data: bytes, expires_in: int = 3600) -> bytes:
        now = int(time.time())
        return code_signature.sign(data, self.key, self.arn, now - 10, now + expires_in)


@pytest.fixture
def configs(lam: Any) -> Iterator[list[str]]:
    """ARNs of configurations to delete after the test (functions go first: `functions`)."""
    made: list[str] = []
    yield made
    for arn in made:
        with contextlib.suppress(ClientError):
            lam.delete_code_signing_config(CodeSigningConfigArn=arn)


def _create(lam: Any, made: list[str], profiles: list[str], policy: str, **kw: Any) -> Any:
    resp = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": profiles},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": policy},
        **kw,
    )["CodeSigningConfig"]
    made.append(resp["CodeSigningConfigArn"])
    return resp


def _new_function(lam: Any, functions: Functions, zipped: bytes, csc: str | None) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    extra = {"CodeSigningConfigArn": csc} if csc else {}
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zipped},
        **extra,
    )
    functions.names.append(name)
    return name


def test_config_operations_answer_as_lambda(lam: Any, configs: list[str]) -> None:
    p1, p2 = _profile(), _profile()
    resp = lam.create_code_signing_config(
        Description="release builds",
        AllowedPublishers={"SigningProfileVersionArns": [p1, p2]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"},
        Tags={"team": "a"},
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    created = resp["CodeSigningConfig"]
    configs.append(created["CodeSigningConfigArn"])
    m = ARN.fullmatch(created["CodeSigningConfigArn"])
    assert m is not None
    assert LAST_MODIFIED.fullmatch(created.pop("LastModified"))
    assert created == {
        "CodeSigningConfigId": m[1],
        "CodeSigningConfigArn": created["CodeSigningConfigArn"],
        "Description": "release builds",
        "AllowedPublishers": {"SigningProfileVersionArns": [p1, p2]},
        "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": "Enforce"},
    }
    arn = created["CodeSigningConfigArn"]
    got = lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"]
    got.pop("LastModified")
    assert got == created

    # Update changes only what it names.
    updated = lam.update_code_signing_config(
        CodeSigningConfigArn=arn, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Warn"}
    )["CodeSigningConfig"]
    assert updated["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}
    assert updated["Description"] == "release builds"
    assert updated["AllowedPublishers"]["SigningProfileVersionArns"] == [p1, p2]
    updated = lam.update_code_signing_config(
        CodeSigningConfigArn=arn,
        Description="",
        AllowedPublishers={"SigningProfileVersionArns": [p2]},
    )["CodeSigningConfig"]
    assert updated["Description"] == ""
    assert updated["AllowedPublishers"]["SigningProfileVersionArns"] == [p2]
    assert updated["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}

    # The default policy is Warn.
    plain = _create(lam, configs, [p1], "Warn")
    default = lam.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": [p1]})
    configs.append(default["CodeSigningConfig"]["CodeSigningConfigArn"])
    assert default["CodeSigningConfig"]["CodeSigningPolicies"] == {
        "UntrustedArtifactOnDeployment": "Warn"
    }
    assert default["CodeSigningConfig"]["Description"] == ""

    # Listing pages through every configuration.
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_code_signing_configs(MaxItems=1, **marker)
        assert len(page["CodeSigningConfigs"]) <= 1
        seen += [c["CodeSigningConfigArn"] for c in page["CodeSigningConfigs"]]
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert {arn, plain["CodeSigningConfigArn"]} <= set(seen)
    assert len(seen) == len(set(seen))

    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []
    resp = lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        lam.get_code_signing_config(CodeSigningConfigArn=arn)
    code, message, status = _error(e)
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert arn in message
    with pytest.raises(ClientError) as e:
        lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    assert _error(e)[0] == "ResourceNotFoundException"


def test_bad_configs_are_refused(lam_unchecked: Any, configs: list[str]) -> None:
    lam = lam_unchecked
    cases: list[dict[str, Any]] = [
        {"AllowedPublishers": {"SigningProfileVersionArns": []}},
        {"AllowedPublishers": {"SigningProfileVersionArns": [_profile() for _ in range(21)]}},
        {"AllowedPublishers": {"SigningProfileVersionArns": ["not-an-arn"]}},
        {
            "AllowedPublishers": {"SigningProfileVersionArns": [_profile()]},
            "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": "Block"},
        },
        {
            "AllowedPublishers": {"SigningProfileVersionArns": [_profile()]},
            "Description": "x" * 257,
        },
    ]
    for kwargs in cases:
        with pytest.raises(ClientError) as e:
            resp = lam.create_code_signing_config(**kwargs)
            configs.append(resp["CodeSigningConfig"]["CodeSigningConfigArn"])
        assert _error(e)[0] == "ValidationException", kwargs
    # Twenty is the limit, not more.
    twenty = [_profile() for _ in range(20)]
    _create(lam, configs, twenty, "Enforce")
    with pytest.raises(ClientError) as e:
        lam.get_code_signing_config(CodeSigningConfigArn="arn:aws:lambda:us-east-1:1:csc")
    assert _error(e)[0] == "ValidationException"
    missing = f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0"
    for call in (lam.get_code_signing_config, lam.delete_code_signing_config):
        with pytest.raises(ClientError) as e:
            call(CodeSigningConfigArn=missing)
        assert _error(e)[:3:2] == ("ResourceNotFoundException", 404)


def test_function_link_and_deleting_a_config_in_use(
    lam: Any, configs: list[str], functions: Functions
) -> None:
    csc = _create(lam, configs, [_profile()], "Warn")["CodeSigningConfigArn"]
    name = _new_function(lam, functions, make_zip({"app.py": CODE % 1}), None)
    fn_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    got = lam.get_function_code_signing_config(FunctionName=name)
    assert {k: got[k] for k in ("CodeSigningConfigArn", "FunctionName")} == {
        "CodeSigningConfigArn": "",
        "FunctionName": name,
    }

    put = lam.put_function_code_signing_config(CodeSigningConfigArn=csc, FunctionName=fn_arn)
    assert {k: put[k] for k in ("CodeSigningConfigArn", "FunctionName")} == {
        "CodeSigningConfigArn": csc,
        "FunctionName": name,
    }
    got = lam.get_function_code_signing_config(FunctionName=name)
    assert got["CodeSigningConfigArn"] == csc
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=csc)["FunctionArns"] == [
        fn_arn
    ]

    with pytest.raises(ClientError) as e:
        lam.delete_code_signing_config(CodeSigningConfigArn=csc)
    assert _error(e)[:3:2] == ("ResourceConflictException", 409)
    assert lam.get_code_signing_config(CodeSigningConfigArn=csc)["CodeSigningConfig"]

    missing = f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0"
    with pytest.raises(ClientError) as e:
        lam.put_function_code_signing_config(CodeSigningConfigArn=missing, FunctionName=name)
    assert _error(e)[:3:2] == ("CodeSigningConfigNotFoundException", 404)
    with pytest.raises(ClientError) as e:
        lam.put_function_code_signing_config(CodeSigningConfigArn=csc, FunctionName="t-nothing")
    assert _error(e)[:3:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as e:
        lam.get_function_code_signing_config(FunctionName="t-nothing")
    assert _error(e)[0] == "ResourceNotFoundException"

    resp = lam.delete_function_code_signing_config(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == ""
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=csc)["FunctionArns"] == []

    # A function's link goes with the function.
    lam.put_function_code_signing_config(CodeSigningConfigArn=csc, FunctionName=name)
    lam.delete_function(FunctionName=name)
    lam.delete_code_signing_config(CodeSigningConfigArn=csc)


def test_enforce_takes_only_trusted_intact_packages(
    server: Server, lam: Any, configs: list[str], functions: Functions, tmp_path: Path
) -> None:
    signer = Signer(server, tmp_path).trust()
    other = Signer(server, tmp_path, kind="ecdsa").trust()  # trusted, but not allowed here
    unknown = Signer(server, tmp_path)  # allowed, but Lamina has no key for it
    csc = _create(lam, configs, [signer.arn, unknown.arn], "Enforce")["CodeSigningConfigArn"]
    package = make_zip({"app.py": CODE % 1})

    def refused(zipped: bytes, expected: str) -> str:
        with pytest.raises(ClientError) as e:
            _new_function(lam, functions, zipped, csc)
        code, message, status = _error(e)
        assert (code, status) == (expected, 400), message
        return message

    message = refused(package, "CodeVerificationFailedException")
    assert message.startswith("Lambda cannot deploy the function.")
    refused(other.sign(package), "CodeVerificationFailedException")
    refused(unknown.sign(package), "CodeVerificationFailedException")
    refused(signer.sign(package, expires_in=-1), "CodeVerificationFailedException")
    # Tampered: another package carrying the first one's signature.
    signed = signer.sign(package)
    comment = signed[code_signature._eocd(signed) + 22 :]
    forged_base, _ = code_signature.split(make_zip({"app.py": CODE % 666}))
    forged = forged_base[:-2] + len(comment).to_bytes(2, "little") + comment
    refused(forged, "InvalidCodeSignatureException")
    # A damaged signature is an integrity failure too.
    refused(signed[:-5] + b"!!!!!", "InvalidCodeSignatureException")
    assert not [
        n for n in lam.list_functions()["Functions"] if n["FunctionName"] in functions.names
    ]

    name = _new_function(lam, functions, signed, csc)
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == csc
    conf = lam.get_function_configuration(FunctionName=name)
    before = conf["CodeSha256"]
    assert conf["SigningProfileVersionArn"] == signer.arn
    assert re.fullmatch(
        rf"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-jobs/[0-9a-f]{{32}}", conf["SigningJobArn"]
    )

    # UpdateFunctionCode: the same checks; a refused package leaves the code as it was.
    for bad, code in (
        (make_zip({"app.py": CODE % 2}), "CodeVerificationFailedException"),
        (forged, "InvalidCodeSignatureException"),
    ):
        with pytest.raises(ClientError) as e:
            lam.update_function_code(FunctionName=name, ZipFile=bad)
        assert _error(e)[0] == code
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == before
    update = signer.sign(make_zip({"app.py": CODE % 3}))
    updated = lam.update_function_code(FunctionName=name, ZipFile=update)
    assert updated["CodeSha256"] != before
    assert updated["SigningProfileVersionArn"] == signer.arn
    assert updated["SigningJobArn"] != conf["SigningJobArn"]

    # Revoking the profile makes its signatures fail.
    out = lamina("signers", "revoke", signer.arn, endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=signer.sign(package))
    assert _error(e)[0] == "CodeVerificationFailedException"
    listed = lamina("signers", "list", endpoint=server.endpoint)
    assert f"{signer.arn}  revoked" in listed.stdout
    for s in (signer, other):
        assert lamina("signers", "remove", s.arn, endpoint=server.endpoint).returncode == 0


def test_warn_takes_failing_packages_and_counts_them(
    server: Server,
    lam: Any,
    configs: list[str],
    functions: Functions,
    tmp_path: Path,
) -> None:
    signer = Signer(server, tmp_path).trust()
    csc = _create(lam, configs, [signer.arn], "Warn")["CodeSigningConfigArn"]
    name = _new_function(lam, functions, make_zip({"app.py": CODE % 1}), csc)
    line = f'lamina_signature_validation_errors_total{{check="Unsigned",function="{name}"}} 1.0'
    assert line in httpx.get(server.endpoint + "/metrics").text
    assert "SigningProfileVersionArn" not in lam.get_function_configuration(FunctionName=name)
    assert f"function:{name} deployed with a package that failed the Unsigned check" in (
        server.log()
    )
    # A validly signed package is not counted.
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    lam.update_function_code(FunctionName=name, ZipFile=signer.sign(make_zip({"app.py": "x"})))
    assert line in httpx.get(server.endpoint + "/metrics").text
    # Integrity is checked whatever the policy.
    signed = signer.sign(make_zip({"app.py": CODE % 1}))
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=signed[:-5] + b"!!!!!")
    assert _error(e)[0] == "InvalidCodeSignatureException"
    assert lamina("signers", "remove", signer.arn, endpoint=server.endpoint).returncode == 0


def test_sign_command_signs_in_place(server: Server, tmp_path: Path) -> None:
    signer = Signer(server, tmp_path)
    package = tmp_path / "fn.zip"
    original = make_zip({"app.py": CODE % 1})
    package.write_bytes(original)
    out = lamina(
        "sign",
        str(package),
        "--key",
        str(signer.key_file),
        "--profile",
        signer.arn,
        endpoint=server.endpoint,
    )
    assert out.returncode == 0, out.stderr
    unsigned, sig = code_signature.split(package.read_bytes())
    assert sig is not None and sig.profile == signer.arn
    assert unsigned == code_signature.split(original)[0]
    public = code_signature.load_public_key(signer.public_file.read_bytes())
    assert code_signature.verify(public, unsigned, sig)
    assert not code_signature.verify(public, code_signature.split(make_zip({"a": "b"}))[0], sig)
    # A file that is not a public key is refused by the server, and nothing is trusted.
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    out = lamina("signers", "add", signer.arn, str(bad), endpoint=server.endpoint)
    assert out.returncode == 1
    assert "InvalidParameterValueException" in out.stderr
    assert signer.arn not in lamina("signers", "list", endpoint=server.endpoint).stdout


def test_configs_links_and_signers_survive_a_restart(own_server: Any, tmp_path: Path) -> None:
    srv = own_server()
    lam = srv.client()
    signer = Signer(srv, tmp_path).trust()
    csc = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": [signer.arn]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"},
    )["CodeSigningConfig"]
    lam.create_function(
        FunctionName="kept",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": signer.sign(make_zip({"app.py": CODE % 1}))},
        CodeSigningConfigArn=csc["CodeSigningConfigArn"],
    )
    assert srv.stop() == 0
    srv = own_server(srv.data_dir)
    lam = srv.client()
    got = lam.get_code_signing_config(CodeSigningConfigArn=csc["CodeSigningConfigArn"])
    assert got["CodeSigningConfig"] == csc
    assert (
        lam.get_function_code_signing_config(FunctionName="kept")["CodeSigningConfigArn"]
        == csc["CodeSigningConfigArn"]
    )
    assert lam.get_function_configuration(FunctionName="kept")["SigningProfileVersionArn"] == (
        signer.arn
    )
    # The signer is still trusted, and the policy still enforced.
    lam.update_function_code(
        FunctionName="kept", ZipFile=signer.sign(make_zip({"app.py": CODE % 2}))
    )
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName="kept", ZipFile=make_zip({"app.py": CODE % 3}))
    assert _error(e)[0] == "CodeVerificationFailedException"


def test_layers_of_a_signed_function_must_pass_too(
    server: Server, lam: Any, configs: list[str], functions: Functions, tmp_path: Path
) -> None:
    signer = Signer(server, tmp_path).trust()
    csc = _create(lam, configs, [signer.arn], "Enforce")["CodeSigningConfigArn"]
    layer_name = f"l-{uuid.uuid4().hex[:10]}"
    layer_files = {"python/helper.py": "X = 1\n"}
    unsigned = lam.publish_layer_version(
        LayerName=layer_name, Content={"ZipFile": make_zip(layer_files)}
    )
    signed = lam.publish_layer_version(
        LayerName=layer_name, Content={"ZipFile": signer.sign(make_zip(layer_files))}
    )
    try:
        with pytest.raises(ClientError) as e:
            lam.create_function(
                FunctionName=f"t-{uuid.uuid4().hex[:12]}",
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": signer.sign(make_zip({"app.py": CODE % 1}))},
                CodeSigningConfigArn=csc,
                Layers=[unsigned["LayerVersionArn"]],
            )
        assert _error(e)[0] == "CodeVerificationFailedException"
        name = _new_function(lam, functions, signer.sign(make_zip({"app.py": CODE % 1})), csc)
        lam.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        with pytest.raises(ClientError) as e:
            lam.update_function_configuration(
                FunctionName=name, Layers=[unsigned["LayerVersionArn"]]
            )
        assert _error(e)[0] == "CodeVerificationFailedException"
        assert "Layers" not in lam.get_function_configuration(FunctionName=name)
        lam.update_function_configuration(FunctionName=name, Layers=[signed["LayerVersionArn"]])
        assert (
            lam.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"]
            == (signed["LayerVersionArn"])
        )
    finally:
        for v in (unsigned, signed):
            lam.delete_layer_version(LayerName=layer_name, VersionNumber=v["Version"])
        assert lamina("signers", "remove", signer.arn, endpoint=server.endpoint).returncode == 0


def test_a_code_signing_config_takes_tags(lam: Any) -> None:
    """TagResource, UntagResource and ListTags work on a configuration's ARN as on a
    function's; the tags given at creation are its first ones."""
    arn = lam.create_code_signing_config(
        AllowedPublishers={"SigningProfileVersionArns": [_profile()]}, Tags={"team": "a"}
    )["CodeSigningConfig"]["CodeSigningConfigArn"]
    try:
        assert lam.list_tags(Resource=arn)["Tags"] == {"team": "a"}
        lam.tag_resource(Resource=arn, Tags={"stage": "prod"})
        lam.untag_resource(Resource=arn, TagKeys=["team"])
        assert lam.list_tags(Resource=arn)["Tags"] == {"stage": "prod"}
    finally:
        lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn)
