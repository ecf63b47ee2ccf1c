"""The `lamina` command. Everything but `serve` talks to a running server over HTTP only."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import click

from lamina import __version__, networks
from lamina.aws_services import endpoint_id
from lamina.settings import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_REGION,
    Settings,
    default_data_dir,
    default_memory_capacity_mb,
    default_workers,
    is_loopback,
    parse_listen,
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


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where functions and state are kept [default: $LAMINA_DATA_DIR or ~/.lamina].",
)
@click.option("--region", default=DEFAULT_REGION, show_default=True)
@click.option("--account-id", default=DEFAULT_ACCOUNT_ID, show_default=True)
@click.option(
    "--sandbox",
    type=click.Choice(["auto", "namespace", "process"]),
    default="auto",
    show_default=True,
    help="Execution environment backend: namespace (isolated by the kernel; needs root), "
    "process (unisolated, anywhere), or auto (namespace where it works).",
)
@click.option(
    "--warm-pool",
    default=2,
    show_default=True,
    type=click.IntRange(min=0, max=64),
    help="Environments per runtime kept isolated ahead of need (namespace backend).",
)
@click.option(
    "--concurrency-limit",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="The account's concurrent executions (reserved concurrency comes out of it).",
)
@click.option(
    "--memory-capacity",
    default=None,
    type=click.IntRange(min=128),
    help="MB of MemorySize that live environments may add up to [default: 80% of the host's].",
)
@click.option(
    "--queue-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds an invoke may wait for memory for a new environment before a 429.",
)
@click.option(
    "--idle-timeout",
    default=600.0,
    show_default=True,
    type=float,
    help="Seconds an idle environment is kept warm.",
)
@click.option(
    "--shutdown-grace",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds in-flight invocations get to finish when the server stops.",
)
@click.option(
    "--retry-base-delay",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before an asynchronous event's first retry (the second waits twice this); "
    "every other async back-off is scaled alike. Lambda's is 60; fractions make tests fast.",
)
@click.option(
    "--log-disk-cap",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="MB of disk the function log store may take at most; the oldest events go past "
    "it. Logs also never take the free space --log-disk-reserve keeps.",
)
@click.option(
    "--log-disk-reserve",
    default=None,
    type=click.IntRange(min=0),
    metavar="MB",
    help="MB of the data directory's filesystem that logs never take [default: the larger "
    "of 5% of the filesystem and 256 MB, at most a quarter of it].",
)
@click.option(
    "--log-rate-limit",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="MB",
    help="MB a second of log lines each function may write (0: no limit); lines over it "
    "are dropped and a marker line in the stream counts them.",
)
@click.option(
    "--log-burst",
    default=8.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="MB",
    help="MB of log lines a function may write at once above its rate.",
)
@click.option(
    "--routes",
    "routes_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The HTTP route file (JSON; read at start, rewritten by `lamina routes add|rm`) "
    "[default: routes.json in the data directory].",
)
@click.option(
    "--test-clock-rate",
    default=1.0,
    envvar="LAMINA_TEST_CLOCK_RATE",
    type=click.FloatRange(min=0, min_open=True),
    hidden=True,  # test-only: schedules run this many times as fast as real time
)
@click.option(
    "--strict-roles",
    is_flag=True,
    help="Refuse a function whose Role is not a role defined with `lamina roles put`, as "
    "Lambda refuses a role it cannot assume [default: accept it; it grants nothing].",
)
@click.option(
    "--auth",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="Require SigV4-signed requests. 'off' is for local use: only on a loopback address.",
)
@click.option(
    "--admin-key",
    envvar="LAMINA_ADMIN_KEY",
    default=None,
    metavar="AKID:SECRET",
    help="Use this admin access key (replacing the stored one); no AWS profile is written "
    "unless --write-profile [default: $LAMINA_ADMIN_KEY, else the stored or a new one].",
)
@click.option(
    "--write-profile",
    is_flag=True,
    help="With --admin-key: write it as the 'lamina' AWS profile too.",
)
@click.option(
    "--allow-egress",
    "allow_egress",
    multiple=True,
    metavar="CIDR",
    help="Let every function reach this network, which the egress policy closes (private "
    "ranges, the host's own networks). Repeatable. Link-local and metadata addresses stay "
    "closed. See docs/networking.md.",
)
@click.option(
    "--vpc",
    "vpcs",
    multiple=True,
    metavar="VPC_ID=SUBNET_ID:CIDR[,...]",
    help="Define a VPC whose subnets functions join through VpcConfig.SubnetIds; they reach "
    "all its CIDRs. Repeatable, e.g. --vpc vpc-lab=subnet-db:10.20.1.0/24. See "
    "docs/networking.md.",
)
@click.option(
    "--aws-endpoint",
    "aws_endpoints",
    multiple=True,
    metavar="SERVICE=URL",
    help="Where functions' AWS SDKs send SERVICE (repeatable), e.g. dynamodb=http://127.0.0.1:8000:"
    " sets AWS_ENDPOINT_URL_DYNAMODB in every function (a function's own Environment wins). "
    "Loopback URLs are relayed into namespace sandboxes.",
)
@click.option(
    "--no-runtime-sdk",
    is_flag=True,
    help="Do not download the AWS SDKs Lambda bundles with its runtimes (boto3, the AWS SDK "
    "for JavaScript v3) from PyPI/npm; runtimes run without them unless already installed.",
)
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics on this address instead of the main one (/health is served on "
    "both) [default: /metrics on the main address, unsigned].",
)
@click.option(
    "--s3-endpoint",
    default=None,
    metavar="URL",
    envvar="LAMINA_S3_ENDPOINT",
    help="The S3-API endpoint (AWS S3, MinIO, Ceph...) that Code.S3Bucket/S3Key and layers' "
    "Content.S3* are read from, with credentials from the usual AWS chain (AWS_ACCESS_KEY_ID, "
    "AWS_PROFILE...). Without it, code from S3 is refused. See docs/functions.md.",
)
@click.option(
    "--sqs-endpoint",
    default=None,
    metavar="URL",
    envvar="LAMINA_SQS_ENDPOINT",
    help="The SQS-API endpoint (AWS SQS, or an SQS-compatible server) whose queues SQS "
    "event-source mappings poll, with credentials from the usual AWS chain; the region comes "
    "from each queue's ARN. Without it, SQS mappings are refused. See docs/event-sources.md.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=0, max=64),
    help="Front worker processes that accept on the main address and read and verify "
    "Invokes beside the server's event loop; 0: the server accepts itself "
    "[default: one per CPU but one, at least 1, at most 8].",
)
@click.option("--allow-non-loopback", is_flag=True, hidden=True)  # accepted, no longer needed
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    region: str,
    account_id: str,
    sandbox: str,
    warm_pool: int,
    concurrency_limit: int,
    memory_capacity: int | None,
    queue_timeout: float,
    idle_timeout: float,
    shutdown_grace: int,
    retry_base_delay: float,
    log_disk_cap: int,
    log_disk_reserve: int | None,
    log_rate_limit: float,
    log_burst: float,
    routes_file: Path | None,
    test_clock_rate: float,
    strict_roles: bool,
    auth: str,
    admin_key: str | None,
    write_profile: bool,
    allow_egress: tuple[str, ...],
    vpcs: tuple[str, ...],
    aws_endpoints: tuple[str, ...],
    no_runtime_sdk: bool,
    metrics_listen: str | None,
    s3_endpoint: str | None,
    sqs_endpoint: str | None,
    workers: int | None,
    allow_non_loopback: bool,
    log_level: str,
) -> None:
    """Run the Lamina server (Lambda API, Runtime API and environments) in this process."""
    from lamina.server import serve as run_server

    if auth == "off" and not is_loopback(host):
        _fail(
            f"--auth off is only allowed on a loopback address, not --host {host}: beyond "
            "loopback every request must be signed.",
            code=2,
        )
    admin: tuple[str, str] | None = None
    if admin_key:
        key_id, sep, secret = admin_key.partition(":")
        if not sep or not key_id or not secret:
            _fail("--admin-key takes ACCESS_KEY_ID:SECRET_ACCESS_KEY", code=2)
        admin = (key_id, secret)
    if not (account_id.isdigit() and len(account_id) == 12):
        _fail("--account-id must be 12 digits", code=2)
    try:
        allowed = tuple(networks.parse_cidr(c, "--allow-egress") for c in allow_egress)
        defined = tuple(networks.parse_vpc(v) for v in vpcs)
        networks.check_vpcs(defined)
    except networks.NetworkSpecError as e:
        _fail(str(e), code=2)
    metrics_address = None
    if metrics_listen is not None:
        try:
            metrics_address = parse_listen(metrics_listen)
        except ValueError as e:
            _fail(f"--metrics-listen: {e}", code=2)
        if metrics_address == (host, port):
            _fail("--metrics-listen must differ from --host/--port", code=2)
    settings = Settings(
        host=host,
        port=port,
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        region=region,
        account_id=account_id,
        sandbox=sandbox,
        warm_pool=warm_pool,
        concurrency_limit=concurrency_limit,
        memory_capacity_mb=memory_capacity or default_memory_capacity_mb(),
        queue_timeout_s=queue_timeout,
        idle_timeout_s=idle_timeout,
        shutdown_grace_s=shutdown_grace,
        retry_base_delay_s=retry_base_delay,
        log_disk_cap_mb=log_disk_cap,
        log_disk_reserve_mb=log_disk_reserve,
        log_rate_limit_mb=log_rate_limit,
        log_burst_mb=log_burst,
        routes_file=routes_file.expanduser().resolve() if routes_file else None,
        test_clock_rate=test_clock_rate,
        strict_roles=strict_roles,
        auth=auth == "on",
        allow_egress=allowed,
        vpcs=defined,
        aws_endpoints=_aws_endpoints(aws_endpoints),
        install_sdks=not no_runtime_sdk,
        metrics_listen=metrics_address,
        s3_endpoint=_http_url("--s3-endpoint", s3_endpoint),
        sqs_endpoint=_http_url("--sqs-endpoint", sqs_endpoint),
        workers=default_workers() if workers is None else workers,
    )
    run_server(settings, log_level=log_level, admin_key=admin, write_profile=write_profile)


def _http_url(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        _fail(f"{option}: {value!r} is not an http(s) URL", code=2)
    return value


def _aws_endpoints(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`--aws-endpoint SERVICE=URL` values as (endpoint id, URL): the service by its signing
    name (dynamodb, secretsmanager) or its endpoint id (DYNAMODB, SECRETS_MANAGER)."""
    found: dict[str, str] = {}
    for value in values:
        service, sep, url = value.partition("=")
        parts = urlsplit(url)
        if not sep or not service or parts.scheme not in ("http", "https") or not parts.netloc:
            _fail(f"--aws-endpoint takes SERVICE=http(s)://HOST[:PORT], not {value!r}", code=2)
        key = service.strip()
        endpoint_key = key if key.isupper() else endpoint_id(key.lower())
        found[endpoint_key.replace("-", "_")] = url.rstrip("/")
    return tuple(sorted(found.items()))


# -- client commands ---------------------------------------------------------------------


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
    def __init__(self, endpoint: str) -> None:
        import httpx

        from lamina.cli.signing import Signer

        self.endpoint = endpoint.rstrip("/")
        self._signer = Signer(self.endpoint)
        self._client = httpx.Client(base_url=self.endpoint, timeout=930.0, auth=self._signer)

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
            try:
                message = resp.json().get("message") or resp.text
            except ValueError:
                message = resp.text
            if kind in AUTH_ERRORS:
                # Say which credentials were tried and how to get working ones.
                message += f"\nCredentials tried: {self._signer.source}.\n{AUTH_FIX}"
            elif kind == "AccessDeniedException":
                message += f"\nCredentials used: {self._signer.source}."
            _fail(f"{kind}: {message}")
        return resp


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
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--handler", required=True, help="module.function, e.g. app.handler")
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
@endpoint_option
def deploy(
    name: str,
    path: Path,
    handler: str,
    runtime: str,
    timeout: int | None,
    memory: int | None,
    env: tuple[str, ...],
    role: str | None,
    layers: tuple[str, ...],
    endpoint: str,
) -> None:
    """Zip PATH (a directory or a .zip) and create function NAME, or update it."""
    api = Api(endpoint)
    zipped = base64.b64encode(_zip_path(path)).decode()
    config: dict[str, Any] = {"Handler": handler, "Runtime": runtime}
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
    existing = api.call("GET", f"{_FN}/{name}", ok_missing=True)
    if existing.status_code == 404:
        account = os.environ.get("LAMINA_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
        body = {
            "FunctionName": name,
            "Role": role or f"arn:aws:iam::{account}:role/lamina-function",
            "Code": {"ZipFile": zipped},
            **config,
        }
        api.call("POST", _FN, json_body=body)
        verb = "created"
    else:
        api.call("PUT", f"{_FN}/{name}/code", json_body={"ZipFile": zipped})
        _wait_ready(api, name)
        if role:
            config["Role"] = role
        api.call("PUT", f"{_FN}/{name}/configuration", json_body=config)
        verb = "updated"
    final = _wait_ready(api, name)
    click.echo(
        f"{click.style(verb, fg='green')} {final['FunctionArn']} "
        f"({final['Runtime']}, {final['Handler']}, {final['CodeSize']} bytes)"
    )


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
@endpoint_option
def invoke(
    name: str, payload: str | None, qualifier: str | None, asynchronous: bool, endpoint: str
) -> None:
    """Invoke NAME and print what it returned (with --async: queue it and print its id)."""
    api = Api(endpoint)
    if payload == "-":
        payload = sys.stdin.read()
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as e:
            _fail(f"--payload is not JSON: {e}")
    params = {"Qualifier": qualifier} if qualifier else None
    resp = api.call(
        "POST",
        f"{_FN}/{name}/invocations",
        content=(payload or "").encode(),
        params=params,
        headers={"X-Amz-Invocation-Type": "Event"} if asynchronous else None,
    )
    if asynchronous:
        click.echo(f"queued {resp.headers.get('x-amzn-RequestId', '')}")
        return
    body = resp.text
    with contextlib.suppress(ValueError):
        body = json.dumps(json.loads(body), indent=2)
    if resp.headers.get("X-Amz-Function-Error"):
        click.secho(body, fg="red", err=True)
        sys.exit(1)
    click.echo(body)


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
    table = [header] + [
        (
            f["FunctionName"],
            f.get("Runtime", ""),
            f.get("Handler", ""),
            f"{f['MemorySize']} MB",
            f"{f['Timeout']} s",
            f.get("State", ""),
            f["LastModified"],
        )
        for f in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if i == 0 else line)


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
from lamina.cli import keys as _keys  # noqa: E402, F401  (registers `keys`)
from lamina.cli import logs as _logs  # noqa: E402, F401  (registers `logs`; it imports main)
from lamina.cli import roles as _roles  # noqa: E402, F401  (registers `roles`; it imports main)
from lamina.cli import routes as _routes  # noqa: E402, F401  (registers `routes`; it imports main)
from lamina.cli import schedules as _schedules  # noqa: E402, F401  (registers `schedules`)
from lamina.cli import sources as _sources  # noqa: E402, F401  (`brokers`, `secrets`, `sources`)
from lamina.cli import usage as _usage  # noqa: E402, F401  (registers `usage`; it imports main)
