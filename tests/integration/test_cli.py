"""The `lamina` command against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.conftest import Server, free_port, lamina, lamina_env, make_zip

pytestmark = pytest.mark.control_plane


def test_deploy_invoke_ls_rm(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "fn"
    src.mkdir()
    (src / "app.py").write_text("def handler(e, c):\n    return {'got': e}\n")
    (src / "lib").mkdir()
    (src / "lib" / "__init__.py").write_text("")
    ep = server.endpoint

    deployed = lamina("deploy", "cli-fn", str(src), "--handler", "app.handler", endpoint=ep)
    assert deployed.returncode == 0, deployed.stderr
    assert "created" in deployed.stdout and "cli-fn" in deployed.stdout

    out = lamina("invoke", "cli-fn", "--payload", '{"n": 1}', endpoint=ep)
    assert out.returncode == 0, out.stderr
    assert '"got"' in out.stdout and '"n": 1' in out.stdout

    (src / "app.py").write_text("def handler(e, c):\n    return 'second'\n")
    redeployed = lamina("deploy", "cli-fn", str(src), "--handler", "app.handler", endpoint=ep)
    assert redeployed.returncode == 0, redeployed.stderr
    assert "updated" in redeployed.stdout
    assert lamina("invoke", "cli-fn", endpoint=ep).stdout.strip() == '"second"'

    listed = lamina("ls", endpoint=ep)
    assert listed.returncode == 0
    assert any(line.startswith("cli-fn ") for line in listed.stdout.splitlines())

    removed = lamina("rm", "cli-fn", endpoint=ep)
    assert removed.returncode == 0
    assert "cli-fn" not in lamina("ls", endpoint=ep).stdout


def test_invoke_failure_exits_non_zero(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "app.py").write_text("def handler(e, c):\n    raise KeyError('nope')\n")
    ep = server.endpoint
    assert (
        lamina("deploy", "cli-bad", str(src), "--handler", "app.handler", endpoint=ep).returncode
        == 0
    )
    try:
        out = lamina("invoke", "cli-bad", endpoint=ep)
        assert out.returncode == 1
        assert "KeyError" in out.stderr
        # the request id, for `lamina replay`, is the one the error body names
        error = json.loads(out.stderr[: out.stderr.rindex("}") + 1])
        assert f"request {error['requestId']} (lamina replay " in out.stderr
    finally:
        lamina("rm", "cli-bad", endpoint=ep)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("invoke", "no-such-fn"), "ResourceNotFoundException"),
        (("rm", "no-such-fn"), "ResourceNotFoundException"),
        (("invoke", "x", "--payload", "{bad"), "not JSON"),
    ],
)
def test_errors_are_readable(server: Server, args: tuple[str, ...], fragment: str) -> None:
    out = lamina(*args, endpoint=server.endpoint)
    assert out.returncode == 1
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr


def test_deploy_bad_runtime_explains(server: Server, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def handler(e, c):\n    return 1\n")
    out = lamina(
        "deploy",
        "cli-rt",
        str(tmp_path),
        "--handler",
        "app.handler",
        "--runtime",
        "python3.7",
        endpoint=server.endpoint,
    )
    assert out.returncode == 1
    assert "InvalidParameterValueException" in out.stderr


def test_unreachable_endpoint(tmp_path: Path) -> None:
    out = lamina("ls", endpoint=f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 2
    assert "lamina serve" in out.stderr
    assert "Traceback" not in out.stderr


def test_runtimes_lists_what_the_host_has(server: Server) -> None:
    out = lamina("runtimes", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert "python3.11" in names
    assert "provided.al2023" in names
    assert "nodejs20.x" in names  # the host's Node.js 20
    assert "python3.8" not in names  # deprecated: never offered


def test_invoke_async_and_queue(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "asyncfn"
    src.mkdir()
    (src / "app.py").write_text("def handler(e, c):\n    raise ValueError('always')\n")
    ep = server.endpoint
    deployed = lamina("deploy", "cli-async", str(src), "--handler", "app.handler", endpoint=ep)
    assert deployed.returncode == 0, deployed.stderr
    try:
        # No retries, so the event is given up at once and shows as dropped.
        lam = server.client()
        lam.put_function_event_invoke_config(FunctionName="cli-async", MaximumRetryAttempts=0)
        out = lamina("invoke", "cli-async", "--async", "--payload", '{"n": 1}', endpoint=ep)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("queued ")
        request_id = out.stdout.split()[1]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            shown = lamina("queue", endpoint=ep)
            assert shown.returncode == 0, shown.stderr
            if request_id in shown.stdout:
                break
            time.sleep(0.1)
        assert f"cli-async {request_id}: RetriesExhausted after 1 attempt(s) (ValueError)" in (
            shown.stdout
        )
    finally:
        lamina("rm", "cli-async", endpoint=ep)


def test_runtimes_shows_bundled_sdks_and_architectures(server: Server) -> None:
    out = lamina("runtimes", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    python = lines.index(next(line for line in lines if line.startswith("python3.11 ")))
    assert lines[python + 1].strip().startswith("bundled SDK: ready (boto3 1.43.11")
    assert any(line.startswith("architectures: x86_64") or "arm64" in line for line in lines)


def test_failed_authentication_names_the_credentials_tried(server: Server, tmp_path: Path) -> None:
    env = dict(
        lamina_env(server.endpoint),
        AWS_ACCESS_KEY_ID="AKIDNOSUCHKEY0000000",
        AWS_SECRET_ACCESS_KEY="wrong",
    )
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "ls"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1
    assert "UnrecognizedClientException" in out.stderr
    assert (
        "Credentials tried: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment "
        "(key AKIDNOSUCHKEY0000000)" in out.stderr
    )
    assert "To fix:" in out.stderr and "lamina keys create" in out.stderr

    # With nothing to sign with at all, it says what it looked for.
    bare = {
        k: v
        for k, v in env.items()
        if not k.startswith("AWS_ACCESS") and k != "AWS_SECRET_ACCESS_KEY"
    }
    bare["LAMINA_DATA_DIR"] = str(tmp_path / "no-data-dir")
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "ls"], capture_output=True, text=True, env=bare, timeout=60
    )
    assert out.returncode == 1
    assert "Credentials tried: none" in out.stderr
    assert "no admin key readable in" in out.stderr


def test_deploy_takes_layers_role_memory_timeout_and_env(server: Server, tmp_path: Path) -> None:
    lam = server.client()
    layer = lam.publish_layer_version(
        LayerName=f"cli-layer-{uuid.uuid4().hex[:6]}",
        Content={"ZipFile": make_zip({"python/cli_layer_mod.py": "VALUE = 'from the layer'\n"})},
    )["LayerVersionArn"]
    src = tmp_path / "fn"
    src.mkdir()
    (src / "app.py").write_text(
        "import os, cli_layer_mod\n"
        "def handler(e, c):\n"
        "    return [cli_layer_mod.VALUE, os.environ['GREETING'], c.memory_limit_in_mb]\n"
    )
    name = f"cli-opts-{uuid.uuid4().hex[:6]}"
    role = f"arn:aws:iam::000000000000:role/{name}"
    args = ["--handler", "app.handler", "--layers", layer, "--role", role]
    args += ["--memory", "256", "--timeout", "7", "--env", "GREETING=hello=there"]
    deployed = lamina("deploy", name, str(src), *args, endpoint=server.endpoint)
    try:
        assert deployed.returncode == 0, deployed.stderr
        config = lam.get_function_configuration(FunctionName=name)
        assert [x["Arn"] for x in config["Layers"]] == [layer]
        assert config["Role"] == role
        assert (config["MemorySize"], config["Timeout"]) == (256, 7)
        assert config["Environment"]["Variables"] == {"GREETING": "hello=there"}
        out = lamina("invoke", name, endpoint=server.endpoint)
        assert json.loads(out.stdout) == ["from the layer", "hello=there", "256"]
    finally:
        lamina("rm", name, endpoint=server.endpoint)


def test_endpoint_comes_from_the_profile(server: Server, tmp_path: Path) -> None:
    """Without --endpoint or $LAMINA_ENDPOINT, the profile's endpoint_url (which `lamina
    serve` writes) picks the server: a server on another port needs no flag."""
    config = tmp_path / "config"
    config.write_text(
        f"[profile lamina]\nregion = us-east-1\nendpoint_url = {server.endpoint}\n"
        f"[profile other]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:{free_port()}\n"
        "aws_access_key_id = AKIDOTHERPROFILE0000\naws_secret_access_key = other\n"
    )
    env = {k: v for k, v in lamina_env(server.endpoint).items() if k != "LAMINA_ENDPOINT"}
    env.pop("AWS_PROFILE", None)
    env["AWS_CONFIG_FILE"] = str(config)
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "runtimes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "python3.11" in out.stdout
    # --profile names another profile: its endpoint (nothing listens there) is used.
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "--profile", "other", "runtimes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert "cannot reach Lamina" in out.stderr
