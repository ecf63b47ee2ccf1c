"""`lamina serve`: the server's options, checked before anything starts, and the cluster's
(`--cluster`, `--database`, `--nats`...). The only command that runs in this process rather
than talking to a server over HTTP."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import click

from lamina import networks
from lamina.aws_services import endpoint_id
from lamina.cli.main import _fail, main
from lamina.settings import (
    CONSOLE_SESSION_TTL_MAX_S,
    CONSOLE_SESSION_TTL_MIN_S,
    CONSOLE_SESSION_TTL_S,
    DEFAULT_ACCOUNT_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_REGION,
    ClusterSettings,
    Settings,
    default_data_dir,
    default_memory_capacity_mb,
    default_workers,
    is_loopback,
    parse_listen,
)


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
    "--image-registry",
    "image_registries",
    multiple=True,
    metavar="[HOST=]URL",
    envvar="LAMINA_IMAGE_REGISTRY",
    help="Where container-image functions' images are pulled from (repeatable): a URL alone "
    "serves every ECR URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/...); HOST=URL maps the "
    "registry HOST[:PORT] of an ImageUri to URL. Other hosts are reached directly. See "
    "docs/images.md.",
)
@click.option(
    "--image-registry-auth",
    default=None,
    metavar="FILE",
    envvar="LAMINA_IMAGE_REGISTRY_AUTH",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Registry credentials, in the auth file format skopeo and docker write "
    '({"auths": {"HOST[:PORT]": {"auth": base64("USER:PASSWORD")}}}). See docs/images.md.',
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=0, max=64),
    help="Front worker processes that accept on the main address and read and verify "
    "Invokes beside the server's event loop; 0: the server accepts itself "
    "[default: one per CPU but one, at least 1, at most 8].",
)
@click.option(
    "--cluster",
    "cluster",
    is_flag=True,
    help="Run as a node of a cluster: shared state in the --database PostgreSQL, coordination "
    "over the --nats JetStream servers. See docs/cluster.md.",
)
@click.option(
    "--database",
    default=None,
    metavar="URL",
    envvar="LAMINA_DATABASE",
    help="With --cluster: the shared PostgreSQL database, postgresql://USER[:PASSWORD]@HOST"
    "[:PORT]/DB.",
)
@click.option(
    "--nats",
    "nats_urls",
    multiple=True,
    metavar="URL",
    envvar="LAMINA_NATS",
    help="With --cluster: a NATS server with JetStream, nats://HOST:PORT (repeat, or separate "
    "with commas, for the servers of a NATS cluster).",
)
@click.option(
    "--node-name",
    default=None,
    metavar="NAME",
    help="With --cluster: this node's name, unique among live nodes [default: the host name].",
)
@click.option(
    "--cluster-name",
    default=None,
    metavar="NAME",
    help="With --cluster: the cluster's name; it prefixes every NATS bucket, stream and "
    "subject, so several clusters can share one NATS [default: lamina].",
)
@click.option(
    "--advertise-url",
    default=None,
    metavar="URL",
    help="With --cluster: the URL other nodes and clients reach this node's API at "
    "[default: the address it listens on].",
)
@click.option(
    "--replay-retention",
    default="24h",
    show_default=True,
    envvar="LAMINA_REPLAY_RETENTION",
    metavar="DURATION",
    help="How long each invocation's request and outcome are kept for `lamina replay` "
    "(e.g. 24h, 30m, 2s; 0 keeps nothing) [env: LAMINA_REPLAY_RETENTION].",
)
@click.option(
    "--replay-max-bytes",
    default=1 << 30,
    show_default=True,
    envvar="LAMINA_REPLAY_MAX_BYTES",
    type=click.IntRange(min=1),
    help="Bytes the kept invocations may take at most; the oldest go first past it.",
)
@click.option(
    "--otlp-endpoint",
    default=None,
    envvar="LAMINA_OTLP_ENDPOINT",
    metavar="URL",
    help="An OpenTelemetry collector's OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318): "
    "traced invocations' spans go to URL/v1/traces; see docs/tracing.md "
    "[env: LAMINA_OTLP_ENDPOINT].",
)
@click.option(
    "--no-console",
    is_flag=True,
    help="Do not serve the web console: /console answers 404 and console sessions "
    "authenticate nothing. See docs/console.md.",
)
@click.option(
    "--console-session-ttl",
    default=CONSOLE_SESSION_TTL_S,
    show_default=True,
    envvar="LAMINA_CONSOLE_SESSION_TTL",
    type=click.IntRange(min=CONSOLE_SESSION_TTL_MIN_S, max=CONSOLE_SESSION_TTL_MAX_S),
    metavar="SECONDS",
    help="How long a web console sign-in lasts, 900 to 43200 seconds as STS's session "
    "durations [env: LAMINA_CONSOLE_SESSION_TTL].",
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
    image_registries: tuple[str, ...],
    image_registry_auth: Path | None,
    workers: int | None,
    cluster: bool,
    database: str | None,
    nats_urls: tuple[str, ...],
    node_name: str | None,
    cluster_name: str | None,
    advertise_url: str | None,
    replay_retention: str,
    replay_max_bytes: int,
    otlp_endpoint: str | None,
    no_console: bool,
    console_session_ttl: int,
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
    from lamina.images.reference import Registries

    try:
        Registries.from_options(image_registries, image_registry_auth)
    except ValueError as e:
        _fail(str(e), code=2)
    metrics_address = None
    if metrics_listen is not None:
        try:
            metrics_address = parse_listen(metrics_listen)
        except ValueError as e:
            _fail(f"--metrics-listen: {e}", code=2)
        if metrics_address == (host, port):
            _fail("--metrics-listen must differ from --host/--port", code=2)
    from lamina.observability.invocation_log import parse_duration

    try:
        replay_retention_s = parse_duration(replay_retention)
    except ValueError as e:
        _fail(f"--replay-retention: {e}", code=2)
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
        image_registries=image_registries,
        image_registry_auth=image_registry_auth.resolve() if image_registry_auth else None,
        workers=default_workers() if workers is None else workers,
        cluster=_cluster_settings(
            cluster, database, nats_urls, node_name, cluster_name, advertise_url
        ),
        replay_retention_s=replay_retention_s,
        replay_max_bytes=replay_max_bytes,
        otlp_endpoint=_http_url("--otlp-endpoint", otlp_endpoint),
        console=not no_console,
        console_session_ttl_s=console_session_ttl,
    )
    run_server(settings, log_level=log_level, admin_key=admin, write_profile=write_profile)


def _cluster_settings(
    cluster: bool,
    database: str | None,
    nats_urls: tuple[str, ...],
    node_name: str | None,
    cluster_name: str | None,
    advertise_url: str | None,
) -> ClusterSettings | None:
    """--cluster and its options, checked: each is required, well-formed, and only taken with
    --cluster (a forgotten --cluster must not start a lone node that ignores them)."""
    given = [
        name
        for name, value in (
            ("--database", database),
            ("--nats", nats_urls),
            ("--node-name", node_name),
            ("--cluster-name", cluster_name),
            ("--advertise-url", advertise_url),
        )
        if value
    ]
    if not cluster:
        if given:
            _fail(f"{', '.join(given)}: only with --cluster", code=2)
        return None
    if not database:
        _fail("--cluster needs --database postgresql://USER@HOST[:PORT]/DB", code=2)
    scheme = urlsplit(database).scheme
    if scheme.split("+")[0] not in ("postgresql", "postgres") or not urlsplit(database).netloc:
        _fail(f"--database: {_redacted(database)!r} is not a postgresql:// URL", code=2)
    urls = [u.strip() for value in nats_urls for u in value.split(",") if u.strip()]
    if not urls:
        _fail("--cluster needs --nats nats://HOST:PORT (one per NATS server)", code=2)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            _fail(f"--nats: {url!r} is not a nats://HOST:PORT URL", code=2)
    name = node_name or socket.gethostname()
    for option, value in (("--node-name", name), ("--cluster-name", cluster_name or "lamina")):
        if not _NODE_NAME.fullmatch(value):
            _fail(
                f"{option}: {value!r}: use 1-64 letters, digits, '-' and '_' (it names NATS "
                "subjects and keys)",
                code=2,
            )
    return ClusterSettings(
        database_url=database,
        nats_urls=tuple(urls),
        node_name=name,
        name=cluster_name or "lamina",
        advertise_url=_http_url("--advertise-url", advertise_url),
    )


_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _redacted(url: str) -> str:
    """`url` without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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
