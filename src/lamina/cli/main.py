"""The `lamina` command. Everything but `serve` talks to a running server over HTTP only."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shlex
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from lamina import __version__
from lamina.cli.tables import print_table
from lamina.settings import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
)

if TYPE_CHECKING:
    import httpx

# The HTTP client (httpx) and the signer (botocore) are imported by the commands that talk to
# a server, not at start: `lamina serve` runs in this process and would otherwise hold them
# (about 10 MB) for its whole life.

DEFAULT_ENDPOINT = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
_FN = "/2015-03-31/functions"


@click.group()
@click.version_option(__version__, prog_name="lamina")
@click.option(
    "--profile",
    envvar="AWS_PROFILE",
    default=None,
    help="AWS profile whose key signs requests [default: $AWS_PROFILE, else $AWS_ACCESS_KEY_ID, "
    "else the 'lamina' profile, else the admin key in the data directory].",
)
def main(profile: str | None) -> None:
    """Lamina: self-hosted AWS Lambda."""


# -- serve -------------------------------------------------------------------------------


def _endpoint(ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    """--endpoint or $LAMINA_ENDPOINT; else the AWS profile's `endpoint_url` (the one
    `--profile`/$AWS_PROFILE names, else `lamina`, which `lamina serve` writes with its own
    address); else the default address."""
    if value:
        return value
    from lamina.cli.signing import profile_endpoint

    profile = ctx.find_root().params.get("profile") or os.environ.get("AWS_PROFILE") or "lamina"
    return profile_endpoint(str(profile)) or DEFAULT_ENDPOINT


endpoint_option = click.option(
    "--endpoint",
    envvar="LAMINA_ENDPOINT",
    callback=_endpoint,
    help="Lamina server URL (or $LAMINA_ENDPOINT); by default the AWS profile's "
    f"endpoint_url, else {DEFAULT_ENDPOINT}.",
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


class Api:
    def __init__(self, endpoint: str, timeout: float | None = 930.0) -> None:
        import httpx

        from lamina.cli.signing import Signer

        self.endpoint = endpoint.rstrip("/")
        self._signer = Signer(self.endpoint)
        self._client = httpx.Client(base_url=self.endpoint, timeout=timeout, auth=self._signer)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        ok_missing: bool = False,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        import httpx

        from lamina.cli.signing import AUTH_ERRORS, AUTH_FIX

        try:
            resp = self._client.request(
                method, path, json=json_body, content=content, params=params, headers=headers
            )
        except httpx.TransportError as e:
            _fail(f"cannot reach Lamina at {self.endpoint} ({e}). Is `lamina serve` running?", 2)
        if resp.status_code >= 400:
            kind = resp.headers.get("x-amzn-ErrorType", f"HTTP {resp.status_code}")
            if ok_missing and kind == "ResourceNotFoundException":
                return resp
            message = error_message(resp)
            if kind in AUTH_ERRORS:
                # Say which credentials were tried and how to get working ones.
                message += f"\nCredentials tried: {self._signer.source}.\n{AUTH_FIX}"
            elif kind == "AccessDeniedException":
                message += f"\nCredentials used: {self._signer.source}."
            _fail(f"{kind}: {message}")
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The server's answer as it is, errors included (`call` exits on one): for callers
        that handle errors themselves, such as a stack's deploy, which rolls back."""
        return self._client.request(
            method, path, json=json_body, content=content, params=params, headers=headers
        )


def error_message(resp: httpx.Response) -> str:
    """An error answer's message: Lambda's `Message`, the other APIs' `message`, else the
    body as it is."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    if isinstance(body, dict):
        message = body.get("message") or body.get("Message")
        if isinstance(message, str) and message:
            return message
    return resp.text


def _zip_path(path: Path) -> bytes:
    if path.is_file():
        if not zipfile.is_zipfile(path):
            _fail(f"{path} is neither a directory nor a zip file")
        return path.read_bytes()
    if not path.is_dir():
        _fail(f"{path} does not exist")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path)
            if any(part in ("__pycache__", ".git") for part in rel.parts):
                continue
            if file.is_file():
                zf.write(file, rel.as_posix())
    return buf.getvalue()


def _wait_ready(api: Api, name: str) -> dict[str, Any]:
    for _ in range(600):
        config: dict[str, Any] = api.call("GET", f"{_FN}/{name}/configuration").json()
        if config.get("State") == "Active" and config.get("LastUpdateStatus") != "InProgress":
            return config
        if "Failed" in (config.get("State"), config.get("LastUpdateStatus")):
            _fail(f"{name}: {config.get('StateReason') or config.get('LastUpdateStatusReason')}")
        time.sleep(0.1)
    _fail(f"{name} did not become active")


@main.command()
@click.argument("name", required=False)
@click.argument("path", type=click.Path(exists=True, path_type=Path), required=False)
@click.option("--handler", default=None, help="module.function, e.g. app.handler (zip only).")
@click.option("--runtime", default="python3.11", show_default=True)
@click.option("--timeout", type=int, default=None, help="Seconds (1-900).")
@click.option("--memory", type=int, default=None, help="MB (128-10240).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable.")
@click.option("--role", default=None, help="Execution role ARN (see `lamina roles`).")
@click.option(
    "--layers",
    "layers",
    multiple=True,
    metavar="ARN",
    help="Layer version ARN, in order (repeatable, or comma-separated; at most 5).",
)
@click.option(
    "--durable-timeout",
    type=int,
    default=None,
    metavar="SECONDS",
    help="DurableConfig.ExecutionTimeout: a durable function's executions last at most SECONDS "
    "(1-31622400). As on Lambda, a function is made durable only when it is created.",
)
@click.option(
    "--durable-retention",
    type=int,
    default=None,
    metavar="DAYS",
    help="With --durable-timeout: days ended executions are kept (1-90, default 14).",
)
@click.option(
    "--image-uri",
    default=None,
    metavar="URI",
    help="Deploy a container image (PackageType Image) instead of PATH: HOST[:PORT]/REPO:TAG "
    "or @sha256:..., or an ECR URI (see docs/images.md).",
)
@click.option(
    "--entry-point",
    default=None,
    metavar="WORDS",
    help="With --image-uri: ImageConfig.EntryPoint, as shell words (replaces ENTRYPOINT).",
)
@click.option(
    "--command",
    "image_command",
    default=None,
    metavar="WORDS",
    help="With --image-uri: ImageConfig.Command, as shell words (replaces CMD).",
)
@click.option(
    "--working-dir",
    default=None,
    metavar="DIR",
    help="With --image-uri: ImageConfig.WorkingDirectory (replaces WORKDIR).",
)
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Deploy a SAM / CloudFormation template as a stack instead (see docs/stacks.md).",
)
@click.option(
    "--parameter-overrides",
    multiple=True,
    metavar="K=V",
    help="With --template: parameter values, K=V or ParameterKey=K,ParameterValue=V "
    "(repeatable, or space-separated).",
)
@click.option(
    "--stack", default=None, help="With --template: the stack [default: the template's directory]."
)
@click.option("--strict", is_flag=True, help="With --template: fail on resource types not run.")
@endpoint_option
def deploy(
    name: str | None,
    path: Path | None,
    handler: str | None,
    runtime: str,
    timeout: int | None,
    memory: int | None,
    env: tuple[str, ...],
    role: str | None,
    layers: tuple[str, ...],
    durable_timeout: int | None,
    durable_retention: int | None,
    image_uri: str | None,
    entry_point: str | None,
    image_command: str | None,
    working_dir: str | None,
    template: Path | None,
    parameter_overrides: tuple[str, ...],
    stack: str | None,
    strict: bool,
    endpoint: str,
) -> None:
    """Zip PATH (a directory or a .zip) and create function NAME, or update it; with
    --image-uri, deploy that container image instead; with --template, deploy a SAM or
    CloudFormation template as a stack."""
    if template is not None:
        from lamina.cli.stacks import deploy_template

        if name is not None or path is not None:
            _fail("--template deploys a template: give no NAME and no PATH")
        deploy_template(Api(endpoint), template, parameter_overrides, stack, strict)
        return
    if name is None:
        _fail("deploy needs NAME (or --template FILE)")
    if parameter_overrides or stack or strict:
        _fail("--parameter-overrides, --stack and --strict go with --template")
    if durable_retention is not None and durable_timeout is None:
        _fail("--durable-retention goes with --durable-timeout")
    image_config = _image_config(image_uri, path, handler, entry_point, image_command, working_dir)
    if image_uri is None and (path is None or handler is None):
        _fail("deploy needs PATH and --handler (or --image-uri URI for a container image)")
    api = Api(endpoint)
    config: dict[str, Any] = {}
    code: dict[str, Any] = {}
    if image_uri is not None:
        code = {"ImageUri": image_uri}
        if image_config:
            config["ImageConfig"] = image_config
    else:
        assert path is not None
        code = {"ZipFile": base64.b64encode(_zip_path(path)).decode()}
        config = {"Handler": handler, "Runtime": runtime}
    if timeout is not None:
        config["Timeout"] = timeout
    if memory is not None:
        config["MemorySize"] = memory
    if env:
        pairs = [e.split("=", 1) for e in env]
        if any(len(p) != 2 for p in pairs):
            _fail("--env takes KEY=VALUE")
        config["Environment"] = {"Variables": dict(pairs)}
    if layers:
        config["Layers"] = [arn.strip() for item in layers for arn in item.split(",") if arn]
    if durable_timeout is not None:
        durable = {"ExecutionTimeout": durable_timeout}
        if durable_retention is not None:
            durable["RetentionPeriodInDays"] = durable_retention
        config["DurableConfig"] = durable
    verb, final = put_function(api, name, code, config, role=role, image=image_uri is not None)
    what = (
        f"image {image_uri}, sha256:{final['CodeSha256']}"
        if image_uri is not None
        else f"{final['Runtime']}, {final['Handler']}, {final['CodeSize']} bytes"
    )
    click.echo(f"{click.style(verb, fg='green')} {final['FunctionArn']} ({what})")


def put_function(
    api: Api,
    name: str,
    code: dict[str, Any],
    config: dict[str, Any],
    *,
    role: str | None = None,
    image: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Create function NAME with `code` (the API's FunctionCode) and `config`, or update its
    code and then its configuration; ("created" or "updated", its configuration once ready)."""
    existing = api.call("GET", f"{_FN}/{name}", ok_missing=True)
    if existing.status_code == 404:
        account = os.environ.get("LAMINA_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
        body = {
            "FunctionName": name,
            "Role": role or f"arn:aws:iam::{account}:role/lamina-function",
            "Code": code,
            **config,
        }
        if image:
            body["PackageType"] = "Image"
        api.call("POST", _FN, json_body=body)
        verb = "created"
    else:
        api.call("PUT", f"{_FN}/{name}/code", json_body=code)
        _wait_ready(api, name)
        if role:
            config = {**config, "Role": role}
        api.call("PUT", f"{_FN}/{name}/configuration", json_body=config)
        verb = "updated"
    return verb, _wait_ready(api, name)


def _image_config(
    image_uri: str | None,
    path: Path | None,
    handler: str | None,
    entry_point: str | None,
    command: str | None,
    working_dir: str | None,
) -> dict[str, Any]:
    """`deploy`'s ImageConfig, with its options checked against each other."""
    given = {"EntryPoint": entry_point, "Command": command, "WorkingDirectory": working_dir}
    if image_uri is None:
        if any(v is not None for v in given.values()):
            _fail("--entry-point, --command and --working-dir go with --image-uri")
        return {}
    if path is not None or handler is not None:
        _fail("--image-uri deploys an image: give no PATH and no --handler")
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        out[key] = value if key == "WorkingDirectory" else shlex.split(value)
    return out


@main.command()
@click.argument("name")
@click.option("--payload", default=None, help="JSON event (default {}). '-' reads stdin.")
@click.option("--qualifier", default=None)
@click.option(
    "--async",
    "asynchronous",
    is_flag=True,
    help="Queue the event (InvocationType=Event) and print its request id.",
)
@click.option(
    "--durable-name",
    default=None,
    metavar="NAME",
    help="A durable function's execution name (a start with a name already used returns that "
    "execution); the execution's ARN is printed on stderr.",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Run in a new environment with the debugger listening (debugpy, Node's inspector) "
    "on a loopback port printed on stderr; waits for the IDE to attach. See docs/debugging.md.",
)
@click.option(
    "--debug-port", type=int, default=None, metavar="N", help="--debug's port (default: free)."
)
@endpoint_option
def invoke(
    name: str,
    payload: str | None,
    qualifier: str | None,
    asynchronous: bool,
    durable_name: str | None,
    debug: bool,
    debug_port: int | None,
    endpoint: str,
) -> None:
    """Invoke NAME and print what it returned (with --async: queue it and print its id)."""
    if debug_port is not None and not debug:
        _fail("--debug-port goes with --debug")
    if debug and (asynchronous or durable_name):
        _fail("--debug runs one synchronous invocation: not with --async or --durable-name")
    # Stopped at a breakpoint, an invocation has no deadline: nor has its request, then.
    api = Api(endpoint, timeout=None) if debug else Api(endpoint)
    if payload == "-":
        payload = sys.stdin.read()
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as e:
            _fail(f"--payload is not JSON: {e}")
    params = {"Qualifier": qualifier} if qualifier else None
    headers = {"X-Amz-Invocation-Type": "Event"} if asynchronous else {}
    if durable_name:
        headers["X-Amz-Durable-Execution-Name"] = durable_name
    session = None
    if debug:
        session = _debug_session(api, name, params, debug_port)
        headers["X-Lamina-Debug-Session"] = session
    try:
        resp = api.call(
            "POST",
            f"{_FN}/{name}/invocations",
            content=(payload or "").encode(),
            params=params,
            headers=headers or None,
        )
    finally:
        if session is not None:
            api.call("DELETE", f"/lamina/functions/{name}/debug/{session}", ok_missing=True)
    execution = resp.headers.get("X-Amz-Durable-Execution-Arn")
    if execution:
        # On stderr: stdout stays the function's result, for pipes.
        click.echo(f"durable execution {execution}", err=True)
    if asynchronous:
        click.echo(f"queued {resp.headers.get('x-amzn-RequestId', '')}")
        return
    body = resp.text
    with contextlib.suppress(ValueError):
        body = json.dumps(json.loads(body), indent=2)
    if resp.headers.get("X-Amz-Function-Error"):
        click.secho(body, fg="red", err=True)
        request_id = resp.headers.get("x-amzn-RequestId")
        if request_id:
            # what `lamina replay` takes, to run it again on fixed code
            click.echo(f"request {request_id} (lamina replay {request_id} --code DIR)", err=True)
        sys.exit(1)
    click.echo(body)


def _debug_session(api: Api, name: str, params: dict[str, str] | None, port: int | None) -> str:
    """Start a debug environment of `name` (waiting for the IDE); returns its session."""
    started = api.call(
        "POST",
        f"/lamina/functions/{name}/debug",
        json_body={"Port": port or 0, "Wait": True},
        params=params,
    ).json()
    kind = {"debugpy": "debugpy", "node": "Node inspector"}.get(started["Debugger"], "debugger")
    click.echo(
        f"debugger ({kind}) listening on {started['Host']}:{started['Port']} - "
        "attach your IDE; waiting for it...",
        err=True,
    )
    return str(started["Session"])


@main.command(name="ls")
@endpoint_option
def list_functions(endpoint: str) -> None:
    """List functions."""
    api = Api(endpoint)
    rows = []
    marker = None
    while True:
        params: dict[str, str] | None = {"Marker": marker} if marker else None
        page = api.call("GET", _FN, params=params).json()
        rows += page["Functions"]
        marker = page.get("NextMarker")
        if not marker:
            break
    if not rows:
        click.echo("no functions")
        return
    header = ("NAME", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "STATE", "LAST MODIFIED")
    body = [
        (
            f["FunctionName"],
            f.get("Runtime") or ("(image)" if f.get("PackageType") == "Image" else ""),
            f.get("Handler", ""),
            f"{f['MemorySize']} MB",
            f"{f['Timeout']} s",
            f.get("State", ""),
            f["LastModified"],
        )
        for f in rows
    ]
    print_table(header, body)


@main.command()
@click.argument("name")
@endpoint_option
def rm(name: str, endpoint: str) -> None:
    """Delete function NAME."""
    Api(endpoint).call("DELETE", f"{_FN}/{name}")
    click.echo(f"{click.style('deleted', fg='yellow')} {name}")


@main.command()
@endpoint_option
def runtimes(endpoint: str) -> None:
    """List the runtimes the server can run, and on what."""
    data = Api(endpoint).call("GET", "/lamina/runtimes").json()
    for r in data["Runtimes"]:
        if r.get("Missing"):
            click.echo(f"{r['Runtime']:<16} unavailable: {r['Missing']}")
            continue
        what = r["Executable"] or "the function's own bootstrap"
        version = f" {r['Version']}" if r["Version"] else ""
        click.echo(f"{r['Runtime']:<16} {r['Family']}{version} ({what})")
        sdk = r.get("Sdk")
        if sdk and sdk["State"] != "none":
            colour = {"ready": "green", "installing": "yellow"}.get(sdk["State"], "red")
            line = f"  bundled SDK: {sdk['State']}" + (
                f" ({sdk['Detail']})" if sdk["Detail"] else ""
            )
            click.secho(line, fg=colour)
        debugger = r.get("Debugger")
        if debugger and debugger["State"] != "none":
            click.echo(f"  debugger: {debugger['State']} ({debugger['Detail']})")
    archs = data.get("Architectures", [])
    if archs:
        click.echo(
            "architectures: " + ", ".join(f"{a['Architecture']} ({a['How']})" for a in archs)
        )


@main.command()
@endpoint_option
def queue(endpoint: str) -> None:
    """Show the asynchronous event queue: per function, and the last events given up."""
    data = Api(endpoint).call("GET", "/lamina/async", params={"MaxItems": "10"}).json()
    click.echo(
        f"queued {data['depth']}  accepted {data['accepted']}  succeeded {data['succeeded']}  "
        f"retried {data['retried']}  failed {data['failed']}  expired {data['expired']}  "
        f"dead-lettered {data['dead_lettered']}"
    )
    for name, f in data["functions"].items():
        click.echo(
            f"  {name:<40} {f['depth']:>7} queued  {f['running']:>4} running  "
            f"oldest {f['oldestAgeSeconds']:.1f} s"
        )
    for d in data["droppedEvents"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["droppedAt"]))
        detail = f" ({d['detail']})" if d["detail"] else ""
        click.secho(
            f"  dropped {when} {d['functionName']} {d['requestId']}: {d['reason']} after "
            f"{d['attempts']} attempt(s){detail}",
            fg="yellow",
        )


from lamina.cli import code_signing as _code_signing  # noqa: E402, F401  (`signers`, `sign`)
from lamina.cli import db as _db  # noqa: E402, F401  (registers `db`; it imports main)
from lamina.cli import dev as _dev  # noqa: E402, F401  (registers `dev`; it imports main)
from lamina.cli import durable as _durable  # noqa: E402, F401  (registers `durable`)
from lamina.cli import images as _images  # noqa: E402, F401  (registers `images`)
from lamina.cli import keys as _keys  # noqa: E402, F401  (registers `keys`)
from lamina.cli import logs as _logs  # noqa: E402, F401  (registers `logs`; it imports main)
from lamina.cli import nodes as _nodes  # noqa: E402, F401  (registers `nodes`; it imports main)
from lamina.cli import replay as _replay  # noqa: E402, F401  (registers `replay`; it imports main)
from lamina.cli import roles as _roles  # noqa: E402, F401  (registers `roles`; it imports main)
from lamina.cli import routes as _routes  # noqa: E402, F401  (registers `routes`; it imports main)
from lamina.cli import schedules as _schedules  # noqa: E402, F401  (registers `schedules`)
from lamina.cli import serve as _serve  # noqa: E402, F401  (registers `serve`; it imports main)
from lamina.cli import sources as _sources  # noqa: E402, F401  (`brokers`, `secrets`, `sources`)
from lamina.cli import stacks as _stacks  # noqa: E402, F401  (registers `stacks`)
from lamina.cli import usage as _usage  # noqa: E402, F401  (registers `usage`; it imports main)
from lamina.cli import websockets as _websockets  # noqa: E402, F401  (registers `websockets`)
