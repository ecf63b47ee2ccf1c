"""AWS's SAM CLI end to end: `sam init` (its own hello-world applications, Python and Node.js,
from the templates bundled in the SAM CLI), `sam build`, then `lamina deploy --template` of what
`sam build` left, the route answering over HTTP, an update, and `lamina stacks delete`.

The SAM CLI is installed from PyPI into a virtual environment of its own (once per machine,
cached beside the other test downloads): its pinned dependencies must not meet Lamina's.
`sam init` runs in a network namespace of its own with loopback only, so its attempt to clone
AWS's template repository fails at once and it uses the templates it ships (as it does
offline); `sam build` installs the applications' dependencies from PyPI and npm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.conftest import SIGNED, Server, lamina

if os.geteuid() != 0:
    pytest.skip("`unshare -n` (sam init without a network) needs root", allow_module_level=True)

pytestmark = pytest.mark.system

SAM_CLI = "aws-sam-cli>=1.120,<2"
_CACHE = Path(tempfile.gettempdir()) / "lamina-test-sam-cli"


def _host_python() -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (Path(sys.base_prefix) / "bin" / f"python{version}").resolve()


@pytest.fixture(scope="module")
def sam() -> Path:
    """The `sam` command, installed once; a marker written last says the install is whole."""
    marker = _CACHE / "installed"
    if not marker.exists():
        shutil.rmtree(_CACHE, ignore_errors=True)
        subprocess.run([str(_host_python()), "-m", "venv", str(_CACHE)], check=True)
        subprocess.run(
            [str(_CACHE / "bin" / "python"), "-m", "pip", "install", "--quiet", SAM_CLI],
            check=True,
            timeout=900,
        )
        marker.write_text(SAM_CLI)
    return _CACHE / "bin" / "sam"


def _sam_env() -> dict[str, str]:
    # The host's interpreters and node first (sam build runs `python3.11 -m pip` and `npm`),
    # never a pyenv shim.
    path = os.pathsep.join(
        [
            str(_host_python().parent),
            str(Path(shutil.which("node") or "/usr/bin/node").parent),
            "/usr/local/bin",
            "/usr/bin",
            "/bin",
        ]
    )
    return dict(os.environ, PATH=path, SAM_CLI_TELEMETRY="0")


def _sam(sam: Path, *args: str, cwd: Path, offline: bool = False) -> str:
    cmd = [str(sam), *args]
    if offline:
        cmd = ["unshare", "--net", *cmd]
    done = subprocess.run(cmd, cwd=cwd, env=_sam_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"sam {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _init(sam: Path, where: Path, runtime: str, manager: str, name: str) -> Path:
    _sam(
        sam,
        "init",
        "--no-interactive",
        "--runtime",
        runtime,
        "--dependency-manager",
        manager,
        "--app-template",
        "hello-world",
        "--package-type",
        "Zip",
        "--name",
        name,
        cwd=where,
        offline=True,
    )
    return where / name


@pytest.mark.parametrize(
    ("runtime", "manager", "source"),
    [
        ("python3.11", "pip", "hello_world/app.py"),
        ("nodejs20.x", "npm", "hello-world/app.js"),
    ],
)
def test_sam_hello_world_deploys_answers_updates_and_is_deleted(
    sam: Path,
    own_server: Callable[..., Server],
    tmp_path: Path,
    runtime: str,
    manager: str,
    source: str,
) -> None:
    server = own_server()
    app = _init(sam, tmp_path, runtime, manager, "sam-app")
    _sam(sam, "build", cwd=app)
    built = app / ".aws-sam" / "build" / "template.yaml"

    # no --stack: the name comes from the samconfig.toml `sam init` wrote
    first = lamina("deploy", "--template", str(built), endpoint=server.endpoint)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Successfully created/updated stack - sam-app" in first.stdout
    function = "sam-app-HelloWorldFunction"
    assert f"arn:aws:lambda:us-east-1:000000000000:function:{function}" in first.stdout
    url = re.search(r"GET /hello -> (\S+)", first.stdout)
    assert url is not None, first.stdout
    assert url[1] == f"{server.endpoint}/_http/hello"
    answer = httpx.get(url[1], timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"message": "hello world"}

    code = app / source
    code.write_text(code.read_text().replace("hello world", "hello from lamina"))
    _sam(sam, "build", cwd=app)
    second = lamina("deploy", "--template", str(built), endpoint=server.endpoint)
    assert second.returncode == 0, second.stdout + second.stderr
    changed = {
        (line.split()[1], line.split()[2])
        for line in second.stdout.splitlines()
        if line.startswith("UPDATE_COMPLETE ") and "AWS::CloudFormation::Stack" not in line
    }
    # only the function's code changed: the role, API and permission are left alone
    assert changed == {("AWS::Lambda::Function", "HelloWorldFunction")}, second.stdout
    assert httpx.get(url[1], timeout=30).json() == {"message": "hello from lamina"}

    listed = lamina("stacks", endpoint=server.endpoint)
    assert re.search(r"^sam-app\s+UPDATE_COMPLETE\s+6\s", listed.stdout, re.M), listed.stdout

    gone = lamina("stacks", "delete", "sam-app", endpoint=server.endpoint)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert httpx.get(url[1], timeout=30).status_code == 404
    lam = server.client()
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=function)
    roles = httpx.get(f"{server.endpoint}/lamina/roles", auth=SIGNED, timeout=10).json()
    assert not [r for r in roles["Roles"] if r["RoleName"].startswith("sam-app-")]
    assert "sam-app" not in lamina("stacks", endpoint=server.endpoint).stdout
