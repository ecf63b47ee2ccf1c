"""Wiring: build every part from one `Settings`, run them under uvicorn, stop them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.types import ASGIApp

from lamina.api import AppState, build_app
from lamina.api.listeners import Listeners
from lamina.api.nodes import local_load
from lamina.api.websocket_connections import Connections
from lamina.api.workers import FrontWorkers
from lamina.auth import policy
from lamina.auth.console_session import SessionTokens
from lamina.auth.keys import KeyStore
from lamina.auth.principal import PolicyDocument
from lamina.auth.profile import setup_admin_key
from lamina.cluster.api import ChangeFeed, ClusterConfigError, Leases, NodeDirectory
from lamina.cluster.code import SharedCode
from lamina.cluster.concurrency import ClusterConcurrency
from lamina.cluster.local import LocalLeases, NoFeed
from lamina.cluster.provisioned import ProvisionedPlacement
from lamina.cluster.websockets import ConnectionRelay
from lamina.control import FunctionService, snapstart
from lamina.control.alarms import AlarmService
from lamina.control.brokers import BrokerService
from lamina.control.changes import ChangeApplier
from lamina.control.durable import DurableExecutions
from lamina.control.event_sources import EventSourceService, QueueVisibility
from lamina.control.images import NEEDS_NAMESPACE, ImageFunctions
from lamina.control.metric_queries import MetricQueries
from lamina.control.metric_writer import MetricWriter
from lamina.control.roles import RoleService
from lamina.control.rules import RuleService
from lamina.control.stacks import StackService
from lamina.control.websocket_apis import WebSocketApis
from lamina.datadir import make_private, restrict_umask
from lamina.errors import LaminaError, MalformedPolicyDocumentError
from lamina.events import AsyncQueue
from lamina.events.alarms import AlarmRunner
from lamina.events.bus import EventBus
from lamina.events.durable import DurableRunner
from lamina.events.http_routes import HttpRoutes
from lamina.events.schedules import ScheduleClock, ScheduleRunner
from lamina.events.sources.api import MappingControl, SourceFactory, SourceUnavailable
from lamina.events.sources.invoker import SchedulerInvoker
from lamina.events.sources.manager import SourceRunner
from lamina.http_server import (
    BACKLOG,
    FrontSpec,
    LaminaServer,
    adopter,
    bind,
    has_uvloop,
    listen_url,
    raise_open_files_limit,
    running,
    uvicorn_config,
)
from lamina.images.reference import Registries
from lamina.images.store import ImageStore
from lamina.mappings import Connection, EventSourceMapping, SourceKind
from lamina.models import LATEST, FunctionConfig
from lamina.observability import LogStore, Metrics
from lamina.observability.cw_metrics import UNITS
from lamina.observability.invocation_log import InvocationLog
from lamina.observability.metering import Meter
from lamina.observability.tracing import Exporter
from lamina.runtimes.catalog import Family, RuntimeCatalog, RuntimeInfo
from lamina.runtimes.images import RuntimeImages
from lamina.sandbox import SandboxBackend, namespace
from lamina.sandbox.api import RuntimeSpec
from lamina.sandbox.process import ProcessBackend
from lamina.scheduler import Scheduler
from lamina.scheduler.traces import Tracing
from lamina.settings import Settings, is_loopback
from lamina.store import CodeStore, EventStore, SqliteEventStore
from lamina.store.alarms import AlarmStore
from lamina.store.durable import DurableStore
from lamina.store.engine import describe as describe_database
from lamina.store.http_routes import RouteStore
from lamina.store.metric_data import MetricDataStore
from lamina.store.open import Stores, open_stores
from lamina.store.stacks import StackStore
from lamina.store.websocket_apis import WebSocketApiStore

if TYPE_CHECKING:  # cluster mode only: the default start does not load NATS
    from lamina.cluster.adoption import EventAdoption
    from lamina.cluster.node import ClusterNode

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


def _image_specs(functions: FunctionService) -> list[RuntimeSpec]:
    """What a backend may prepare for the container images functions run (those unpacked
    on this node), one per image."""
    specs: dict[str, RuntimeSpec] = {}
    for config in functions.all_configs():
        image = config.serving_image
        if image is None or image.digest in specs:
            continue
        unpacked = functions.images.unpacked(image.digest)
        if unpacked is not None:
            specs[image.digest] = RuntimeSpec(
                "", False, unpacked.rootfs, image_root=unpacked.rootfs
            )
    return list(specs.values())


def _snapshots_changed(
    scheduler: Scheduler, functions: FunctionService, name: str, version: str | None
) -> None:
    """A function change, as SnapStart templates see it: a deleted function or version loses
    its template (a version published here gets one through `FunctionService.on_snapshot`)."""
    if version is None:
        scheduler.snapshots.forget(name)
    elif version != LATEST:
        scheduler.snapshots.retain(name, version, functions.version(name, version))


def _in_use(runtimes: RuntimeCatalog, names: set[str]) -> list[RuntimeInfo]:
    return [r for r in runtimes.all() if r.name in names]


def create_app(
    settings: Settings,
    backend: SandboxBackend | None = None,
    runtimes: RuntimeCatalog | None = None,
    keys: KeyStore | None = None,
    listeners: Listeners | None = None,
    front: FrontSpec | None = None,
    leases: Leases | None = None,
    directory: NodeDirectory | None = None,
    stores: Stores | None = None,
    event_store: EventStore | None = None,
    event_adoption: EventAdoption | None = None,
    feed: ChangeFeed | None = None,
    cluster: ClusterNode | None = None,
) -> ASGIApp:
    """The whole server as an ASGI app; parts start and stop with its lifespan. With
    `settings.auth`, requests are checked against `keys` (by default the data directory's).
    `listeners`: the ports of the sandbox and metrics listeners, if any (`api.listeners`).
    `front`: front workers to run on the main address once the rest is up (`api.workers`).
    `leases`, `directory`: in a cluster, who runs each mapping's pollers and each schedule's
    ticks (`cluster.ownership`); by default this node runs them all.
    `stores`: the SQL stores (by default opened here from `settings`, see `store.open`).
    `event_store`: where the async queue keeps its events (by default the data directory's
    SQLite file); `event_adoption`: in a cluster, what moves dead nodes' events here.
    `feed`: the other nodes on the same database (`cluster.api.ChangeFeed`; none by default).
    `cluster`: this node's part in its cluster, joined already (`cluster.node`): it gives
    all of the above and starts and stops with the app."""
    if cluster is not None:
        leases, directory, feed = cluster.leases, cluster.directory, cluster.feed
        event_store, event_adoption = cluster.event_store, cluster.adoption
    leases = leases or LocalLeases()
    make_private(settings.data_dir)
    runtimes = runtimes or RuntimeCatalog.discover(settings.data_dir)
    metrics = Metrics()
    log_store = make_log_store(settings, metrics)
    log_store.reclaim()  # before the other stores open: they need room to
    stores = stores or open_stores(settings)
    if settings.auth and keys is None:
        keys = KeyStore(settings.data_dir, settings.account_id, engine=stores.keys)
    metadata = stores.metadata
    code = CodeStore(settings.code_dir)
    functions = FunctionService(settings, metadata, code, runtimes)
    roles = RoleService(settings, stores.roles, functions, validator=_check_role_policy)
    functions.check_role = roles.check_assumable
    functions.signing.on_warning = metrics.signature_warning
    if keys is not None:
        # A role session may do what its role's policies allow; keys' policies are checked
        # by the same engine that evaluates them.
        keys.role_policies = roles.policies_for
        keys.validate_policy = _check_key_policy
    backend = backend or make_backend(settings, runtimes)
    # Container images of image functions: pulled into the data directory, resolved when a
    # function is created or its code updated, pulled behind the call.
    image_store = ImageStore(
        settings.images_dir,
        Registries.from_options(settings.image_registries, settings.image_registry_auth),
    )
    functions.images = ImageFunctions(image_store, functions.settle)
    if backend.name == "process":
        functions.images.refusal = NEEDS_NAMESPACE
    images = RuntimeImages(settings.runtimes_dir, install=settings.install_sdks)
    cluster_concurrency = ClusterConcurrency.for_node(settings)
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
        concurrency=cluster_concurrency,
    )
    scheduler.image_roots = functions.images
    if settings.replay_retention_s > 0:
        scheduler.invocation_log = InvocationLog(
            settings.replay_dir, settings.replay_retention_s, settings.replay_max_bytes
        )
    if settings.otlp_endpoint is not None:
        spans = metrics.trace_spans
        scheduler.tracing = Tracing(
            Exporter(
                settings.otlp_endpoint,
                on_count=lambda outcome, n: spans.labels(outcome).inc(n),
            ),
            settings.region,
            settings.account_id,
        )
    meter = Meter(stores.usage)
    scheduler.logs.on_report.append(meter.record)
    if cluster is not None:
        # Code every node can run: shared when stored, fetched before a cold start.
        shared = SharedCode(cluster.blobs, code, lambda: functions.layers.merges)
        functions.code.share = shared.share
        scheduler.code_ready = shared.ensure
        metrics.node = cluster.name

    async def changed(name: str, version: str | None) -> None:
        scheduler.retire(name, version)
        _snapshots_changed(scheduler, functions, name, version)
        if version is None or functions.version(name, version) is None:
            scheduler.limits.forget(name, version)
        else:
            # A new MemorySize changes what an environment counts against its provider.
            functions.scaling.apply(name, version)
        config = functions.latest(name)
        if config is not None and version == LATEST:
            scheduler.prepare(config)
        backend.expect(
            _runtime_specs(runtimes, functions.runtimes_in_use(), images) + _image_specs(functions)
        )
        images.ensure(_in_use(runtimes, functions.runtimes_in_use()))

    functions.subscribe(changed)

    async def snapshot_built(config: FunctionConfig, failure: bytes | None) -> None:
        """A SnapStart version's template is made, or its init failed: settle the version
        as image pulls settle theirs (`FunctionService.settle`)."""
        reason = None if failure is None else snapstart.failure_reason(failure)
        await functions.settle(
            config.name, partial(snapstart.settled, config.version, config.revision_id, reason)
        )

    scheduler.snapshots.on_built = snapshot_built
    functions.on_snapshot = scheduler.snapshots.build
    # Event-source mappings, their brokers and secrets (tables of their own, same database).
    source_store = stores.event_sources
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
    placement = None
    if cluster is not None:
        # One node keeps a version's provisioned environments, not every node.
        placement = ProvisionedPlacement(scheduler, cluster.directory)
        functions.provisioned.on_change = placement.on_change
        functions.provisioned.status = placement.status
    functions.code.add_user(scheduler.code_in_use)
    if event_store is None:
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
        settings,
        mapping_control,
        source_invoker,
        _source_factories(),
        metrics,
        leases=leases,
        directory=directory,
    )
    # In a cluster the routes are the database's, served alike by every node.
    route_store = RouteStore(metadata.engine) if settings.cluster is not None else None
    routes = HttpRoutes(settings, functions, route_store)
    # EventBridge rules share the metadata database (tables of their own).
    clock = ScheduleClock(settings.test_clock_rate, settings.test_clock_origin_path)
    rules = RuleService(settings, stores.rules, clock=clock.now)
    event_bus = EventBus(settings, rules, async_queue, functions.policies, metrics=metrics)
    schedules = ScheduleRunner(rules, event_bus, clock, leases=leases, directory=directory)
    rules.on_change = schedules.wake
    _join(feed or NoFeed(), functions, roles, rules, event_sources, brokers, routes, keys)
    metric_store = MetricDataStore(stores.engine, UNITS)
    metric_writer = MetricWriter(metrics.cloudwatch, metric_store, scheduler.cloudwatch_gauges)
    metric_queries = MetricQueries(metric_store)
    alarm_runner = AlarmRunner(
        AlarmService(
            AlarmStore(stores.engine), metric_queries, settings.region, settings.account_id
        ),
        metrics.cloudwatch,
        async_queue,
        functions.policies,
    )
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
        stacks=StackService(StackStore(stores.engine), functions),
        metric_queries=metric_queries,
        alarms=alarm_runner,
        keys=keys if settings.auth else None,
        # Console sessions are sealed with the data directory's key, which every node of a
        # cluster shares: a session minted on one node works on all of them.
        console=(
            SessionTokens(stores.sealer, settings.console_session_ttl_s)
            if settings.console
            else None
        ),
        images=images,
        event_sources=event_sources,
        brokers=brokers,
        source_stats=source_runner.stats,
    )
    if cluster is not None:
        state.node_name = cluster.name
        state.directory = cluster.directory
        state.problems = cluster.problems
        cluster.load = lambda: local_load(state)
    # WebSocket APIs: definitions in the shared database, connections on this node.
    state.websockets = WebSocketApis(
        WebSocketApiStore(metadata.engine),
        settings.region,
        settings.account_id,
        settings.endpoint_url,
    )
    # Durable executions: their logs in the shared database, driven on this node.
    durable_runner = DurableRunner(
        DurableExecutions(DurableStore(metadata.engine), settings.region, settings.account_id),
        functions,
        scheduler,
        recover=settings.cluster is None,
        metrics=metrics,
    )
    state.durable = durable_runner
    # Events and event-source batches of durable functions start durable executions.
    async_queue.start_durable = lambda c, r: durable_runner.start_for(c, r, wait=False)
    source_invoker.start_durable = lambda c, r: durable_runner.start_for(c, r, wait=True)
    connections = Connections(state.node_name)
    state.websocket_connections = connections

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        connection_relay: ConnectionRelay | None = None
        if cluster is not None:
            # Before the services load: a change another node makes meanwhile is heard.
            await cluster.start_feed()
        await functions.load()
        # Image functions a stop left Pending (or mid-update): their images pulled again.
        functions.images.recover(functions.all_configs())
        # SnapStart versions a stop left Pending: their templates made again.
        for config in functions.all_configs():
            if snapstart.building(config):
                scheduler.snapshots.build(config)
        await roles.load()
        await brokers.load()
        await event_sources.load()
        event_sources.start()
        await routes.load()  # after the functions: a bad route file stops the start
        log_store.open()
        pruner = asyncio.get_running_loop().create_task(_prune_logs(log_store))
        if scheduler.invocation_log is not None:
            scheduler.invocation_log.start()
        if scheduler.tracing is not None:
            scheduler.tracing.exporter.start()
        await meter.open()
        backend.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, images.link, runtimes.all())
        # Each runtime's SDK, installed in the background where missing (first start).
        images.ensure(_in_use(runtimes, functions.runtimes_in_use()))
        backend.expect(
            _runtime_specs(runtimes, functions.runtimes_in_use(), images) + _image_specs(functions)
        )
        if cluster_concurrency is not None:
            await cluster_concurrency.start()
        scheduler.start()
        if cluster is not None:
            # Before the queue, the schedules and the mappings: leases, forwarded invokes.
            await cluster.start(state, scheduler.idle)
            connection_relay = ConnectionRelay(
                cluster.link.nc,
                cluster.directory,
                cluster.cluster.name,
                cluster.name,
                connections,
            )
            await connection_relay.serve()
            state.connection_relay = connection_relay
        if placement is not None:
            placement.start()
        if isinstance(event_store, SqliteEventStore):
            event_store.open()
        await async_queue.start()
        await durable_runner.start()  # after the scheduler: due executions are invoked
        if event_adoption is not None:
            await event_adoption.start(async_queue)
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
        metric_writer.start()
        alarm_runner.start()  # after the queue: actions go to it
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if workers is not None:
                # First: they stop accepting and finish what they forwarded (served here).
                await workers.stop(float(settings.shutdown_grace_s) + 5.0)
            await alarm_runner.close()
            await schedules.close()  # before the queue: a claimed tick is always queued
            # Before the queue and the scheduler: unfinished batches are not acknowledged.
            await source_runner.close()
            await source_invoker.close()
            if event_adoption is not None:
                await event_adoption.close()
            await async_queue.close()
            await durable_runner.close()
            if placement is not None:
                await placement.close()
            if connection_relay is not None:
                await connection_relay.close()
            if cluster is not None:
                # After the runners (they gave their leases up), before the log store (the
                # cluster's log queries) and the scheduler (forwarded invokes end first).
                await cluster.close()
            await scheduler.close()
            await metric_writer.close()  # after the scheduler: the last invocations count
            if scheduler.invocation_log is not None:
                # After the scheduler: the last invocations' records are written.
                await asyncio.to_thread(scheduler.invocation_log.close)
            if scheduler.tracing is not None:
                await scheduler.tracing.exporter.stop()  # after the scheduler: its last spans
            if cluster_concurrency is not None:
                await cluster_concurrency.close()  # after the scheduler: its leases are done
            await event_sources.close()
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await log_store.close()  # after the scheduler: its last lines are handed over
            await meter.close()  # after the scheduler: the last invocations' reports count
            await backend.close()
            await functions.images.close()  # pulls under way: the next start does them again
            await image_store.close()
            await images.close()
            functions.close()
            rules.close()
            if keys is not None:
                keys.close()

    return build_app(state, lifespan, keys if settings.auth else None, listeners)


def _join(
    feed: ChangeFeed,
    functions: FunctionService,
    roles: RoleService,
    rules: RuleService,
    event_sources: EventSourceService,
    brokers: BrokerService,
    routes: HttpRoutes,
    keys: KeyStore | None,
) -> ChangeApplier:
    """Tell the other nodes of every committed change, and apply theirs (`control.changes`)."""
    functions.feed = functions.layers.feed = functions.signing.feed = feed
    roles.feed = rules.feed = event_sources.feed = brokers.feed = routes.feed = feed
    areas = {
        "function": functions.refresh,
        "layer": functions.layers.refresh,
        "code-signing": functions.signing.refresh,
        "capacity-provider": functions.capacity.refresh,
        "role": roles.refresh,
        "rule": rules.refresh,
        "mapping": event_sources.refresh,
        "broker": brokers.refresh,
        "route": routes.refresh,
    }
    if keys is not None:
        keys.feed = feed
        areas["key"] = keys.refresh
    applier = ChangeApplier(areas)
    feed.subscribe(applier)
    return applier


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
    raise_open_files_limit()
    # Before anything is created and before any thread exists (the umask is process-wide):
    # the data directory and everything the server writes in it are private to its user.
    restrict_umask()
    make_private(settings.data_dir)
    runtimes = RuntimeCatalog.discover(settings.data_dir)
    # A disk left full (by logs, or with a smaller --log-disk-cap now) gets room back before
    # the key store and the other databases open.
    make_log_store(settings).reclaim()
    try:
        stores = open_stores(settings)
    except ClusterConfigError as e:
        raise SystemExit(f"lamina: {e}") from None
    keys = None
    if settings.auth:
        keys = KeyStore(settings.data_dir, settings.account_id, engine=stores.keys)
        setup_admin_key(keys, settings, admin_key, write_profile=write_profile)
    # One server, several sockets: the main address, the sandbox listener (loopback, a port
    # of its own: what the namespace backend's relay connects to, so that the app can tell a
    # sandbox's requests from others by the socket they came in on) and, if asked for, the
    # metrics listener. The app tells them apart by port (`api.listeners`).
    main = bind(settings.host, settings.port)
    # With front workers, they accept on the main address (the server adopts what they hand
    # over); without, the server does.
    sockets = [] if settings.workers > 0 else [main]
    sockets.append(bind("127.0.0.1", 0))
    sandbox_port = int(sockets[-1].getsockname()[1])
    metrics_port = None
    if settings.metrics_listen is not None:
        sockets.append(bind(*settings.metrics_listen))
        metrics_port = int(sockets[-1].getsockname()[1])
    backend = make_backend(settings, runtimes, sandbox_port)
    listeners = Listeners(sandbox_port=sandbox_port, metrics_port=metrics_port)
    front = None
    if settings.workers > 0:
        main.listen(BACKLOG)  # connections wait here until the workers are up
        front = FrontSpec(settings.workers, main, adopter(lambda: running(server)), log_level)
    metrics_note = ""
    if settings.metrics_listen is not None:
        metrics_note = f", metrics: {listen_url(*settings.metrics_listen)}/metrics"
    cluster_note = ""
    if settings.cluster is not None:
        cluster_note = (
            f", cluster: {settings.cluster.name}, node: {settings.cluster.node_name}, "
            f"database: {describe_database(settings.cluster.database_url)}"
        )
    banner = (
        f"Lamina listening on {settings.endpoint_url} (data: {settings.data_dir}, sandbox: "
        f"{backend.description}, runtimes: {', '.join(runtimes.names()) or 'none'}"
        f"{metrics_note}{cluster_note})"
    )
    if settings.console:
        banner += f"\nWeb console: {settings.endpoint_url}/console"

    def start(cluster: ClusterNode | None) -> LaminaServer:
        app = create_app(
            settings,
            backend=backend,
            runtimes=runtimes,
            keys=keys,
            listeners=listeners,
            front=front,
            stores=stores,
            cluster=cluster,
        )
        print(banner, file=sys.stderr, flush=True)
        return LaminaServer(uvicorn_config(app, settings), front)

    server: LaminaServer | None = None
    if settings.cluster is None:
        server = start(None)
        server.run(sockets=sockets)
        return

    async def run_node() -> None:
        # The node joins on the event loop it will serve on (its NATS connection is bound
        # to it), before anything is served: a node that cannot join never half-joins.
        from lamina.cluster.node import ClusterNode

        nonlocal server
        node = ClusterNode(settings, stores.engine)
        try:
            await node.join()
        except ClusterConfigError as e:
            raise SystemExit(f"lamina: {e}") from None
        server = start(node)
        await server.serve(sockets=sockets)
        if not server.started:
            raise SystemExit("lamina: the node did not start (see the errors above)")

    loop_factory = None
    if has_uvloop():
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run_node())
