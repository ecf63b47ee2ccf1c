"""Wiring: build every part from one `Settings`, run them under uvicorn, stop them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import resource
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from lamina.api import AppState, build_app
from lamina.api.http_protocol import AwsErrorsHttpProtocol
from lamina.api.listeners import Listeners
from lamina.api.workers import FrontWorkers
from lamina.auth import policy
from lamina.auth.keys import KeyStore
from lamina.auth.principal import PolicyDocument
from lamina.auth.profile import setup_admin_key
from lamina.control import FunctionService
from lamina.control.brokers import BrokerService
from lamina.control.event_sources import EventSourceService, QueueVisibility
from lamina.control.roles import RoleService
from lamina.control.rules import RuleService
from lamina.datadir import make_private, restrict_umask
from lamina.errors import LaminaError, MalformedPolicyDocumentError
from lamina.events import AsyncQueue
from lamina.events.bus import EventBus
from lamina.events.http_routes import HttpRoutes
from lamina.events.schedules import ScheduleClock, ScheduleRunner
from lamina.events.sources.api import MappingControl, SourceFactory, SourceUnavailable
from lamina.events.sources.invoker import SchedulerInvoker
from lamina.events.sources.manager import SourceRunner
from lamina.mappings import Connection, EventSourceMapping, SourceKind
from lamina.models import LATEST, FunctionConfig
from lamina.observability import LogStore, Metrics
from lamina.observability.metering import Meter
from lamina.runtimes.catalog import Family, RuntimeCatalog, RuntimeInfo
from lamina.runtimes.images import RuntimeImages
from lamina.sandbox import SandboxBackend, namespace
from lamina.sandbox.api import RuntimeSpec
from lamina.sandbox.process import ProcessBackend
from lamina.scheduler import Scheduler
from lamina.settings import Settings, is_loopback
from lamina.store import CodeStore, MetadataStore, SqliteEventStore
from lamina.store.event_sources import EventSourceStore
from lamina.store.roles import RoleStore
from lamina.store.rules import RuleStore
from lamina.store.sealed import Sealer

log = logging.getLogger("lamina")

#: seconds between applications of log retention and the log disk cap
LOG_PRUNE_INTERVAL_S = 60.0
#: how long CreateEventSourceMapping waits to read an SQS queue's visibility timeout
QUEUE_CHECK_S = 5.0


def make_backend(
    settings: Settings, runtimes: RuntimeCatalog, sandbox_port: int | None = None
) -> SandboxBackend:
    """The backend `settings.sandbox` names; `auto` takes `namespace` where it can run.
    `sandbox_port`: the loopback port of the sandbox listener (see `api.listeners`), where the
    namespace backend relays its sandboxes' connections (default: the main port)."""
    choice = settings.sandbox
    if choice in ("auto", "namespace"):
        why_not = namespace.available()
        if why_not is None:
            try:
                return namespace.NamespaceBackend(
                    settings.sandboxes_dir,
                    settings.data_dir,
                    api_address=(settings.connect_host, settings.port),
                    warm_pool=settings.warm_pool,
                    egress=namespace.EgressPolicy(
                        allow=settings.allow_egress,
                        vpcs={vpc.id: vpc.cidrs for vpc in settings.vpcs},
                    ),
                    relay_ports=_loopback_ports(settings),
                    relay_to=("127.0.0.1", sandbox_port) if sandbox_port else None,
                    # Beside the runtime images: built once per machine where they are shared.
                    init_dir=settings.runtimes_dir / "sandbox-init",
                )
            except OSError as e:  # e.g. cgroups present but not writable here
                why_not = str(e)
        if choice == "namespace":
            raise SystemExit(f"lamina: --sandbox namespace cannot run here: {why_not}")
        log.warning("sandbox: process (namespace unavailable: %s)", why_not)
    elif choice != "process":
        raise ValueError(f"unknown sandbox backend {choice!r}")
    # The process backend shares the host's network: it has no egress policy to open.
    ignored = settings.allow_egress or settings.vpcs
    log.warning(
        "sandbox: process: functions share the host's network; nothing limits their egress "
        "(metadata and private addresses included)%s",
        "; --allow-egress and --vpc change nothing" if ignored else "",
    )
    return ProcessBackend(settings.sandboxes_dir)


def make_log_store(settings: Settings, metrics: Metrics | None = None) -> LogStore:
    """The log store `settings` describe (cap, reserve), counting losses in `metrics`."""
    reserve = settings.log_disk_reserve_mb
    return LogStore(
        settings.logs_db_path,
        settings.log_disk_cap_mb * 1024 * 1024,
        reserve_bytes=reserve * 1024 * 1024 if reserve is not None else None,
        on_loss=metrics.log_lost if metrics is not None else None,
    )


def _loopback_ports(settings: Settings) -> tuple[int, ...]:
    """Ports of `--aws-endpoint` URLs on this host's loopback: a namespace sandbox has a
    loopback of its own, so the backend relays these ports into it."""
    ports = []
    for _, url in settings.aws_endpoints:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname and is_loopback(parts.hostname):
            ports.append(port)
    return tuple(sorted(set(ports)))


def _runtime_specs(
    runtimes: RuntimeCatalog, names: set[str], images: RuntimeImages
) -> list[RuntimeSpec]:
    """What a backend may prepare for the runtimes named (those that functions use)."""
    specs = []
    for runtime in runtimes.all():
        if runtime.name in names:
            python = runtime.family is Family.PYTHON
            lang = images.image_dir(runtime)
            specs.append(RuntimeSpec(runtime.executable, python, runtime.runtime_dir, lang))
    return specs


def _in_use(runtimes: RuntimeCatalog, names: set[str]) -> list[RuntimeInfo]:
    return [r for r in runtimes.all() if r.name in names]


def create_app(
    settings: Settings,
    backend: SandboxBackend | None = None,
    runtimes: RuntimeCatalog | None = None,
    keys: KeyStore | None = None,
    listeners: Listeners | None = None,
    front: FrontSpec | None = None,
) -> ASGIApp:
    """The whole server as an ASGI app; parts start and stop with its lifespan. With
    `settings.auth`, requests are checked against `keys` (by default the data directory's).
    `listeners`: the ports of the sandbox and metrics listeners, if any (`api.listeners`).
    `front`: front workers to run on the main address once the rest is up (`api.workers`)."""
    make_private(settings.data_dir)
    if settings.auth and keys is None:
        keys = KeyStore(settings.data_dir, settings.account_id)
    runtimes = runtimes or RuntimeCatalog.discover(settings.data_dir)
    metrics = Metrics()
    log_store = make_log_store(settings, metrics)
    log_store.reclaim()  # before the other stores open: they need room to
    sealer = Sealer.open(settings.data_dir)
    metadata = MetadataStore.sqlite(settings.db_path, sealer)
    code = CodeStore(settings.code_dir)
    functions = FunctionService(settings, metadata, code, runtimes)
    roles = RoleService(settings, RoleStore(metadata), functions, validator=_check_role_policy)
    functions.check_role = roles.check_assumable
    functions.signing.on_warning = metrics.signature_warning
    if keys is not None:
        # A role session may do what its role's policies allow; keys' policies are checked
        # by the same engine that evaluates them.
        keys.role_policies = roles.policies_for
        keys.validate_policy = _check_key_policy
    backend = backend or make_backend(settings, runtimes)
    images = RuntimeImages(settings.runtimes_dir, install=settings.install_sdks)
    scheduler = Scheduler(
        settings,
        backend,
        runtimes,
        metrics,
        task_root=functions.code.task_root,
        opt_dir=functions.layers.opt_dir,
        on_code_released=functions.code.release_code,
        log_store=log_store,
        credentials=_role_credentials(keys) if keys is not None else None,
        images=images,
    )
    meter = Meter(settings.usage_db_path)
    scheduler.logs.on_report.append(meter.record)

    async def changed(name: str, version: str | None) -> None:
        scheduler.retire(name, version)
        if version is None or functions.version(name, version) is None:
            scheduler.limits.forget(name, version)
        else:
            # A new MemorySize changes what an environment counts against its provider.
            functions.scaling.apply(name, version)
        config = functions.latest(name)
        if config is not None and version == LATEST:
            scheduler.prepare(config)
        backend.expect(_runtime_specs(runtimes, functions.runtimes_in_use(), images))
        images.ensure(_in_use(runtimes, functions.runtimes_in_use()))

    functions.subscribe(changed)
    # Event-source mappings, their brokers and secrets (tables of their own, same database).
    source_store = EventSourceStore(metadata.engine, sealer)
    brokers = BrokerService(settings, source_store, functions.run)

    def alias_version(function_name: str, alias: str) -> str | None:
        try:
            return functions.aliases.get(function_name, alias).function_version
        except LaminaError:
            return None

    event_sources = EventSourceService(
        settings,
        source_store,
        functions,
        brokers,
        roles,
        alias_version,
        queue_visibility=_queue_visibility(settings.sqs_endpoint),
    )
    functions.subscribe(event_sources.function_changed)
    functions.aliases.on_deleted.append(event_sources.alias_deleted)
    functions.tags.register("event-source-mapping", _MappingTags(event_sources))
    scheduler.check_startable = functions.runtime_management.check_startable
    functions.scaling.on_limits = lambda config, high, provider, vcpus: (
        scheduler.limits.set_version(config.name, config.version, high, provider, vcpus)
    )
    functions.capacity.on_provider = scheduler.limits.set_provider
    functions.provisioned.on_change = scheduler.provision
    functions.provisioned.status = scheduler.provisioned
    functions.code.add_user(scheduler.code_in_use)
    event_store = SqliteEventStore(settings.events_db_path)
    async_queue = AsyncQueue(settings, event_store, functions, scheduler, metrics)

    def reserved_changed(name: str, reserved: int | None) -> None:
        scheduler.concurrency.set_reserved(name, reserved)
        async_queue.nudge(name)

    functions.concurrency.on_change = reserved_changed
    # The pollers of event-source mappings: a task per mapping, invoking through the scheduler.
    source_invoker = SchedulerInvoker(settings, functions, scheduler, async_queue)
    mapping_control: MappingControl = event_sources
    source_runner = SourceRunner(
        settings, mapping_control, source_invoker, _source_factories(), metrics
    )
    routes = HttpRoutes(settings, functions)
    # EventBridge rules share the metadata database file (their own tables and engine).
    clock = ScheduleClock(settings.test_clock_rate, settings.test_clock_origin_path)
    rules = RuleService(settings, RuleStore.sqlite(settings.db_path), clock=clock.now)
    event_bus = EventBus(settings, rules, async_queue, functions.policies, metrics=metrics)
    schedules = ScheduleRunner(rules, event_bus, clock)
    rules.on_change = schedules.wake
    state = AppState(
        settings=settings,
        functions=functions,
        scheduler=scheduler,
        metrics=metrics,
        runtimes=runtimes,
        async_queue=async_queue,
        meter=meter,
        log_store=log_store,
        http_routes=routes,
        rules=rules,
        event_bus=event_bus,
        schedules=schedules,
        roles=roles,
        keys=keys if settings.auth else None,
        images=images,
        event_sources=event_sources,
        brokers=brokers,
        source_stats=source_runner.stats,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await functions.load()
        await roles.load()
        await brokers.load()
        await event_sources.load()
        event_sources.start()
        await routes.load()  # after the functions: a bad route file stops the start
        log_store.open()
        pruner = asyncio.get_running_loop().create_task(_prune_logs(log_store))
        await meter.open()
        backend.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, images.link, runtimes.all())
        # Each runtime's SDK, installed in the background where missing (first start).
        images.ensure(_in_use(runtimes, functions.runtimes_in_use()))
        backend.expect(_runtime_specs(runtimes, functions.runtimes_in_use(), images))
        scheduler.start()
        event_store.open()
        await async_queue.start()
        await rules.load()
        schedules.start()  # after the queue: a due tick goes straight to it
        await source_runner.start()  # after the queue (failure destinations) and mappings
        workers = None
        if front is not None:
            workers = FrontWorkers(
                front.count,
                front.listener,
                region=settings.region,
                keys=keys if settings.auth else None,
                state=state,
                authorize=state.authorize,
                adopt=front.adopt,
                log_level=front.log_level,
            )
            await workers.start()
            front.running.append(workers)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if workers is not None:
                # First: they stop accepting and finish what they forwarded (served here).
                await workers.stop(float(settings.shutdown_grace_s) + 5.0)
            await schedules.close()  # before the queue: a claimed tick is always queued
            # Before the queue and the scheduler: unfinished batches are not acknowledged.
            await source_runner.close()
            await source_invoker.close()
            await async_queue.close()
            await scheduler.close()
            await event_sources.close()
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await log_store.close()  # after the scheduler: its last lines are handed over
            await meter.close()  # after the scheduler: the last invocations' reports count
            await backend.close()
            await images.close()
            functions.close()
            rules.close()
            if keys is not None:
                keys.close()

    return build_app(state, lifespan, keys if settings.auth else None, listeners)


def _queue_visibility(endpoint: str | None) -> QueueVisibility | None:
    """How the mappings' control reads an SQS queue's visibility timeout (Lambda checks the
    function's timeout against it): at the SQS endpoint, bounded in time so that an endpoint
    that does not answer delays CreateEventSourceMapping by seconds, not minutes."""
    if endpoint is None:
        return None

    async def read(source_arn: str) -> int | None:
        from lamina.events.sources.sqs import queue_visibility_timeout

        try:
            return await asyncio.wait_for(
                queue_visibility_timeout(endpoint, source_arn), QUEUE_CHECK_S
            )
        except (SourceUnavailable, TimeoutError) as e:
            log.info("the visibility timeout of %s cannot be read now: %s", source_arn, e)
            return None

    return read


def _source_factories() -> dict[SourceKind, SourceFactory]:
    """The broker module of each kind of event source, imported when the first mapping of
    its kind starts: a server with no such mapping never loads the broker's client library
    (aio-pika, nats-py and redis-py hold 2 to 7 MB each once imported, for good)."""
    return {
        SourceKind.RABBITMQ: _imported("lamina.events.sources.rabbitmq", "RabbitSource"),
        SourceKind.SQS: _imported("lamina.events.sources.sqs", "SqsSource"),
        SourceKind.NATS: _imported("lamina.events.sources.nats", "NatsStream"),
        SourceKind.REDIS: _imported("lamina.events.sources.redis_streams", "RedisStream"),
    }


def _imported(module: str, name: str) -> SourceFactory:
    """A factory that imports `module` on first use (once: the import system keeps it)."""

    def make(mapping: EventSourceMapping, connection: Connection) -> Any:
        return getattr(importlib.import_module(module), name)(mapping, connection)

    return make


class _MappingTags:
    """Event-source mappings' tags (TagResource on `event-source-mapping:UUID`)."""

    def __init__(self, service: EventSourceService) -> None:
        self._service = service

    async def read(self, resource_id: str) -> dict[str, str] | None:
        return await self._service.read_tags(resource_id)

    async def write(self, resource_id: str, tags: dict[str, str]) -> bool:
        return await self._service.write_tags(resource_id, tags)


#: how long an environment's role session lasts (Lambda's execution-role credentials are
#: refreshed well within 12 h; an environment rarely lives that long here)
ROLE_SESSION_TTL_S = 12 * 3600


def _check_role_policy(document: PolicyDocument) -> None:
    policy.parse(document)  # a PolicyError is a ValueError: the role service reports it


def _check_key_policy(document: PolicyDocument) -> None:
    try:
        policy.parse(document)
    except policy.PolicyError as e:
        raise MalformedPolicyDocumentError(str(e)) from None


def _role_credentials(keys: KeyStore) -> Callable[[FunctionConfig], tuple[str, str, str]]:
    """What the scheduler gives each new environment: a session of the function's role."""

    def credentials(config: FunctionConfig) -> tuple[str, str, str]:
        key_id, secret, token, _ = keys.issue_session(config.role, config.name, ROLE_SESSION_TTL_S)
        return key_id, secret, token

    return credentials


async def _prune_logs(store: LogStore) -> None:
    """Apply log retention and the disk cap at start and then every minute; a failure
    (disk trouble) is logged and tried again next time."""
    while True:
        try:
            await store.prune()
        except OSError as e:
            log.warning("log store: pruning failed: %s", e)
        await asyncio.sleep(LOG_PRUNE_INTERVAL_S)


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    admin_key: tuple[str, str] | None = None,
    write_profile: bool = False,
) -> None:
    """Run the server until SIGTERM/SIGINT. `admin_key` replaces the stored admin key (no
    profile is written then, unless `write_profile`); without one, the first start makes one
    and writes the `lamina` AWS profile (see `auth.profile`)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not settings.auth:
        if not is_loopback(settings.host):  # the CLI refuses this first; never serve it
            raise SystemExit("lamina: --auth off is only allowed on a loopback address")
        print(
            "WARNING: authentication is off (--auth off): any local process can deploy and "
            "run code through this server.",
            file=sys.stderr,
        )
    _raise_open_files_limit()
    # Before anything is created and before any thread exists (the umask is process-wide):
    # the data directory and everything the server writes in it are private to its user.
    restrict_umask()
    make_private(settings.data_dir)
    runtimes = RuntimeCatalog.discover(settings.data_dir)
    # A disk left full (by logs, or with a smaller --log-disk-cap now) gets room back before
    # the key store and the other databases open.
    make_log_store(settings).reclaim()
    keys = None
    if settings.auth:
        keys = KeyStore(settings.data_dir, settings.account_id)
        setup_admin_key(keys, settings, admin_key, write_profile=write_profile)
    # One server, several sockets: the main address, the sandbox listener (loopback, a port
    # of its own: what the namespace backend's relay connects to, so that the app can tell a
    # sandbox's requests from others by the socket they came in on) and, if asked for, the
    # metrics listener. The app tells them apart by port (`api.listeners`).
    main = _bind(settings.host, settings.port)
    # With front workers, they accept on the main address (the server adopts what they hand
    # over); without, the server does.
    sockets = [] if settings.workers > 0 else [main]
    sockets.append(_bind("127.0.0.1", 0))
    sandbox_port = int(sockets[-1].getsockname()[1])
    metrics_port = None
    if settings.metrics_listen is not None:
        sockets.append(_bind(*settings.metrics_listen))
        metrics_port = int(sockets[-1].getsockname()[1])
    backend = make_backend(settings, runtimes, sandbox_port)
    listeners = Listeners(sandbox_port=sandbox_port, metrics_port=metrics_port)
    front = None
    if settings.workers > 0:
        main.listen(_BACKLOG)  # connections wait here until the workers are up
        front = FrontSpec(settings.workers, main, _adopter(lambda: server), log_level)
    app = create_app(
        settings, backend=backend, runtimes=runtimes, keys=keys, listeners=listeners, front=front
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="uvloop" if _has_uvloop() else "asyncio",
        # httptools, answering requests it cannot parse (too long, malformed) in AWS's shape.
        http=AwsErrorsHttpProtocol,
        # Lamina serves no WebSocket: uvicorn's default would import `websockets` for good.
        ws="none",
        # Nothing stands in front of Lamina; trusting X-Forwarded-* from loopback clients
        # would let any local caller claim another address (and costs time on every request).
        proxy_headers=False,
        # In-flight invocations get this long to finish on SIGTERM/Ctrl-C; then they are
        # cancelled and their environments killed (a function may run for 15 minutes).
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    server = _Server(config, front)
    metrics_note = ""
    if settings.metrics_listen is not None:
        metrics_note = f", metrics: {_url(*settings.metrics_listen)}/metrics"
    print(
        f"Lamina listening on {settings.endpoint_url} (data: {settings.data_dir}, sandbox: "
        f"{backend.description}, runtimes: {', '.join(runtimes.names()) or 'none'}"
        f"{metrics_note})",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=sockets)


#: connections the main address queues while no worker accepts them (as uvicorn's default)
_BACKLOG = 2048


@dataclass(frozen=True)
class FrontSpec:
    """Front workers to run (`api.workers`): how many, the main address's listening socket,
    and how the server adopts a connection a worker hands over."""

    count: int
    listener: socket.socket
    adopt: Callable[[socket.socket, bytes], None]
    log_level: str = "warning"
    #: the workers once running (the lifespan puts them here; the server stops them first)
    running: list[FrontWorkers] = field(default_factory=list)


def _adopter(server: Callable[[], uvicorn.Server]) -> Callable[[socket.socket, bytes], None]:
    """Serve a handed-over connection with uvicorn's protocol, as if accepted here, starting
    with the bytes the worker had read from it."""

    adoptions: set[asyncio.Task[None]] = set()

    def adopt(sock: socket.socket, buffered: bytes) -> None:
        running = server()
        config = running.config
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return AwsErrorsHttpProtocol(
                config=config,
                server_state=running.server_state,
                app_state=running.lifespan.state,
                prefill=buffered,
            )

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(protocol, sock)
            except OSError as e:
                log.info("a handed-over connection was gone before it was adopted: %s", e)
                sock.close()

        task = loop.create_task(connect())
        adoptions.add(task)
        task.add_done_callback(adoptions.discard)

    return adopt


def _bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (uvicorn listens on it), or exit with why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"lamina: cannot listen on {_url(host, port)}: {e.strerror}") from e
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would die
    of the signal; Lamina has stopped every environment by then, and a clean stop exits 0.

    Front workers stop first, before uvicorn closes its connections: they stop accepting and
    finish the Invokes they forwarded (served here meanwhile), and hand nothing over after."""

    def __init__(self, config: uvicorn.Config, front: FrontSpec | None = None) -> None:
        super().__init__(config)
        self.front = front

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.front is not None:
            for workers in self.front.running:
                await workers.stop(float(self.config.timeout_graceful_shutdown or 0) + 5.0)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def _raise_open_files_limit() -> None:
    """Every environment holds a few descriptors here (its log pipe, Runtime API socket,
    relay and control sockets): take the hard limit, not the soft default of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
