"""The one `Settings` object, built at start-up and passed into constructors."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from lamina.networks import IPNetwork, Vpc

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "000000000000"
#: a web console session's life, in seconds: an hour by default, within STS's session bounds
CONSOLE_SESSION_TTL_S = 3600
CONSOLE_SESSION_TTL_MIN_S = 900
CONSOLE_SESSION_TTL_MAX_S = 43200


def default_data_dir() -> Path:
    env = os.environ.get("LAMINA_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".lamina"


def default_memory_capacity_mb() -> int:
    """Most of the host's memory (80%), leaving the rest to the server and the host."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(int(line.split()[1]) * 0.8) // 1024
    except (OSError, ValueError):
        pass
    return 4096


def default_workers() -> int:
    """Front workers for the CPUs the server may run on: one per CPU but one (the server's
    own event loop keeps a CPU busy under load), at least one, at most 8. The workers take
    the HTTP and signature work of Invokes off that loop, which is one thread."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, 8))


def default_runtimes_dir() -> Path | None:
    """`LAMINA_RUNTIME_CACHE`, if set: runtime images (bundled SDKs) shared by every server
    that names it, so tests and CI download each SDK once per run."""
    env = os.environ.get("LAMINA_RUNTIME_CACHE")
    return Path(env).expanduser() if env else None


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[V6]:PORT` for an IPv6 address) as (host, port); ValueError if not."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster mode (`lamina serve --cluster`, see docs/cluster.md)."""

    #: the shared database (`--database postgresql://...`)
    database_url: str
    #: the NATS servers (`--nats URL`, repeated for a NATS cluster)
    nats_urls: tuple[str, ...]
    #: this node's name, unique among live nodes (`--node-name`; default: the host name)
    node_name: str
    #: the URL other nodes and clients reach this node's API at (`--advertise-url`;
    #: default: the endpoint it listens on)
    advertise_url: str | None = None
    #: the cluster's name (`--cluster-name`): it prefixes every NATS bucket, stream and
    #: subject, so that several Lamina clusters can share one NATS
    name: str = "lamina"
    #: seconds between heartbeats; a node (and every lease it holds) is gone `ttl_s` after
    #: its last one
    heartbeat_s: float = 1.0
    ttl_s: float = 5.0


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    #: sandbox backend: "auto" (namespace where it works, else process), "namespace",
    #: "process" (or "fake" in tests)
    sandbox: str = "auto"
    #: environments per runtime kept isolated ahead of need (namespace backend)
    warm_pool: int = 2
    #: the account's concurrent executions (Lambda's default quota is 1,000)
    concurrency_limit: int = 1000
    #: MB of MemorySize that live environments may add up to on this node
    memory_capacity_mb: int = field(default_factory=lambda: default_memory_capacity_mb())
    #: seconds a request may wait for memory for its environment before a 429
    queue_timeout_s: float = 10.0
    #: seconds an idle environment is kept before it is stopped (scale to zero)
    idle_timeout_s: float = 600.0
    #: seconds in-flight invocations may take to finish when the server is stopped
    shutdown_grace_s: int = 5
    #: seconds before an asynchronous event's first retry (Lambda: 60; the second waits
    #: twice this); every other async back-off is scaled by the same factor
    retry_base_delay_s: float = 60.0
    #: MB of disk the log store may take at most; the oldest events are pruned past it
    log_disk_cap_mb: int = 1024
    #: MB of the data directory's filesystem logs never take (None: the larger of 5% of it
    #: and 256 MB, at most a quarter of it; see observability/log_disk.py)
    log_disk_reserve_mb: int | None = None
    #: MB a second of log lines each function may write (a token bucket shared by its
    #: environments); 0 for no limit. Lines over it are dropped and a marker says so.
    log_rate_limit_mb: float = 1.0
    #: MB a function may write at once above its rate (the bucket's size)
    log_burst_mb: float = 8.0
    #: the HTTP route file (None: `routes.json` in the data directory)
    routes_file: Path | None = None
    #: TEST-ONLY: schedules (rate/cron rules) run this many times as fast as real time, so a
    #: test sees `rate(1 minute)` fire every second at 60 (`--test-clock-rate`,
    #: `LAMINA_TEST_CLOCK_RATE`). 1 is real time. WebSocket connections' idle timeout and
    #: maximum duration are shortened by the same factor.
    test_clock_rate: float = 1.0
    #: refuse a function whose Role names no role defined in Lamina (`--strict-roles`), as
    #: Lambda refuses a role it cannot assume; without it such a role is accepted and grants
    #: nothing
    strict_roles: bool = False
    #: whether every AWS-protocol request must be SigV4-signed (`--auth on|off`; off is only
    #: allowed on loopback)
    auth: bool = True
    #: networks every function may reach although the egress policy closes them (private
    #: ranges, the host's own networks), `--allow-egress CIDR` (namespace backend)
    allow_egress: tuple[IPNetwork, ...] = ()
    #: the VPCs functions may join through `VpcConfig.SubnetIds`, `--vpc` (see `networks`)
    vpcs: tuple[Vpc, ...] = ()
    #: where functions' AWS SDKs send each service (`--aws-endpoint SERVICE=URL`), by the
    #: SDKs' service id as in AWS_ENDPOINT_URL_<ID> (e.g. "DYNAMODB": "http://..."); a
    #: function's own Environment variables win over these
    aws_endpoints: tuple[tuple[str, str], ...] = ()
    #: where runtime images (the bundled AWS SDKs) live (None: `runtimes` in the data
    #: directory; `LAMINA_RUNTIME_CACHE` sets it)
    runtimes_cache: Path | None = field(default_factory=default_runtimes_dir)
    #: install the runtimes' bundled SDKs (boto3, AWS SDK for JavaScript v3) from PyPI/npm
    #: when missing (`--no-runtime-sdk` turns it off: runtimes then run without them)
    install_sdks: bool = True
    #: front worker processes that accept on the main address and read and verify Invokes
    #: there, beside the server's one event loop (`--workers N`; 0: the server accepts
    #: itself). See `lamina.front.worker`.
    workers: int = field(default_factory=lambda: default_workers())
    #: serve `/metrics` (and `/health`) on this (host, port) instead of the main address
    #: (`--metrics-listen HOST:PORT`); None: on the main address, unsigned
    metrics_listen: tuple[str, int] | None = None
    #: the S3-API endpoint (AWS S3, MinIO, Ceph...) that `Code.S3Bucket/S3Key` and a layer's
    #: `Content.S3*` are read from (`--s3-endpoint URL`), with credentials from the usual AWS
    #: chain; None: code from S3 is refused
    s3_endpoint: str | None = None
    #: the SQS-API endpoint (AWS SQS, or an SQS-compatible server) whose queues SQS
    #: event-source mappings poll (`--sqs-endpoint URL`), with credentials from the usual AWS
    #: chain; the region comes from each queue's ARN. None: SQS mappings are refused.
    sqs_endpoint: str | None = None
    #: where container-image functions' images are pulled from: `--image-registry
    #: [HOST=]URL` values as given (a URL alone serves every ECR URI; HOST=URL maps one
    #: registry host), read by `lamina.images.reference.Registries.from_options`
    image_registries: tuple[str, ...] = ()
    #: the registries' credentials (`--image-registry-auth FILE`: the auth file format
    #: skopeo and docker write); None: no credentials
    image_registry_auth: Path | None = None
    #: cluster mode (`--cluster`): None runs the single-machine default (SQLite, no broker)
    cluster: ClusterSettings | None = None
    #: seconds each invocation's request and outcome are kept for `lamina replay`
    #: (`--replay-retention`, `LAMINA_REPLAY_RETENTION`); 0: nothing is kept
    replay_retention_s: float = 86400.0
    #: bytes the kept invocations may take at most; the oldest go first past it
    #: (`--replay-max-bytes`)
    replay_max_bytes: int = 1 << 30
    #: an OpenTelemetry collector's OTLP/HTTP endpoint (`--otlp-endpoint`): traced
    #: invocations' spans go to <endpoint>/v1/traces; None: nothing is traced
    otlp_endpoint: str | None = None
    #: serve the web console at /console (`--no-console` turns it off: its paths answer
    #: 404 and its cookie authenticates nothing)
    console: bool = True
    #: seconds a console session lasts (`--console-session-ttl`, 900..43200 as STS's
    #: session durations)
    console_session_ttl_s: int = CONSOLE_SESSION_TTL_S

    @property
    def db_path(self) -> Path:
        return self.data_dir / "lamina.db"

    @property
    def events_db_path(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def usage_db_path(self) -> Path:
        return self.data_dir / "usage.db"

    @property
    def logs_db_path(self) -> Path:
        return self.data_dir / "logs.db"

    @property
    def routes_path(self) -> Path:
        return self.routes_file or self.data_dir / "routes.json"

    @property
    def test_clock_origin_path(self) -> Path:
        """Where the sped-up test clock keeps its origin (continuous across restarts)."""
        return self.data_dir / "test-clock-origin"

    @property
    def code_dir(self) -> Path:
        return self.data_dir / "code"

    @property
    def runtimes_dir(self) -> Path:
        """Runtime images: per runtime, its /var/lang (interpreter links, bundled SDK)."""
        return self.runtimes_cache or self.data_dir / "runtimes"

    @property
    def images_dir(self) -> Path:
        """Container images: blobs by digest, and each image unpacked once."""
        return self.data_dir / "images"

    @property
    def replay_dir(self) -> Path:
        """The invocation log's segment files (`observability.invocation_log`)."""
        return self.data_dir / "replay"

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"

    @property
    def connect_host(self) -> str:
        """The address to reach this server at from this host."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
