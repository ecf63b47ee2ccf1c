"""What the HTTP handlers reach: the server's parts, stored on the Starlette app."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from lamina.auth.console_session import SessionTokens
from lamina.auth.keys import KeyStore
from lamina.cluster.api import InvokeRouter, NodeDirectory
from lamina.control import FunctionService
from lamina.control.brokers import BrokerService
from lamina.control.event_sources import EventSourceService
from lamina.control.metric_queries import MetricQueries
from lamina.control.roles import RoleService
from lamina.control.rules import RuleService
from lamina.control.stacks import StackService
from lamina.control.websocket_apis import WebSocketApis
from lamina.events import AsyncQueue
from lamina.events.alarms import AlarmRunner
from lamina.events.bus import EventBus
from lamina.events.http_routes import HttpRoutes
from lamina.events.schedules import ScheduleRunner
from lamina.events.sources.api import MappingStats
from lamina.observability import Meter, Metrics
from lamina.observability.log_store import LogStore
from lamina.runtimes.catalog import RuntimeCatalog
from lamina.runtimes.images import RuntimeImages
from lamina.scheduler import Scheduler
from lamina.settings import Settings

if TYPE_CHECKING:  # the Logs API module reads this one: imported for the annotation only
    from lamina.api.logs_api import LogsReader
    from lamina.api.websocket_connections import Connections
    from lamina.cluster.websockets import ConnectionRelay
    from lamina.events.durable import DurableRunner


@dataclass
class AppState:
    settings: Settings
    functions: FunctionService
    scheduler: Scheduler
    metrics: Metrics
    runtimes: RuntimeCatalog
    async_queue: AsyncQueue
    ready: bool = False
    #: None until the server wires the store in; the Logs API answers ServiceUnavailable then.
    log_store: LogStore | None = None
    #: cluster mode: the Logs API reads every live node's store through this
    #: (`cluster.logs.ClusterLogs`); None: it reads `log_store` alone
    logs: LogsReader | None = None
    meter: Meter | None = None
    #: the HTTP routes served under /_http (None: none, for servers built without them)
    http_routes: HttpRoutes | None = None
    #: EventBridge rules, the default bus and the schedule runner (None: the Events API
    #: answers ServiceUnavailable)
    rules: RuleService | None = None
    event_bus: EventBus | None = None
    schedules: ScheduleRunner | None = None
    #: execution roles defined in Lamina (None: the /lamina/roles endpoints answer
    #: ServiceUnavailable)
    roles: RoleService | None = None
    #: stacks deployed from templates (None: the /lamina/stacks endpoints answer
    #: ServiceException)
    stacks: StackService | None = None
    #: the CloudWatch metric reads (None: the CloudWatch API answers ServiceUnavailable)
    metric_queries: MetricQueries | None = None
    #: CloudWatch alarms and their evaluator (None: the alarm operations answer
    #: ServiceUnavailable)
    alarms: AlarmRunner | None = None
    #: the access keys (None: authentication is off, `lamina serve --auth off`)
    keys: KeyStore | None = None
    #: the web console's session tokens (None: the console is off, `--no-console`)
    console: SessionTokens | None = None
    #: the runtime images and their bundled SDKs (None: servers built without them)
    images: RuntimeImages | None = None
    #: event-source mappings, and the brokers and secrets they use (None: their endpoints
    #: answer ServiceException)
    event_sources: EventSourceService | None = None
    brokers: BrokerService | None = None
    #: a mapping's counters, by UUID (the mapping runner plugs in; None: no poller reports)
    source_stats: Callable[[str], MappingStats | None] = field(default=lambda _: None)
    #: the authorization wrapper (`api.authz.Authorize`), set by `build_app`: Invokes that
    #: front workers read and authenticated (`api.workers`) are checked by it too
    authorize: Any = None
    #: this node's name (cluster mode: `--node-name`; else the host name)
    node_name: str = field(default_factory=socket.gethostname)
    #: seconds since the epoch when the server started
    started_at: float = field(default_factory=time.time)
    #: the live nodes of the cluster (None: a single-machine server)
    directory: NodeDirectory | None = None
    #: what keeps this node from taking work now (cluster mode: its database or NATS lost);
    #: empty when healthy
    problems: Callable[[], list[str]] = field(default=lambda: [])
    #: where a synchronous Invoke runs in a cluster (None: a single node, every Invoke here)
    router: InvokeRouter | None = None
    #: WebSocket APIs' definitions (`control.websocket_apis.WebSocketApis`) and this node's
    #: live connections (`api.websocket_connections.Connections`); None: not served
    websockets: WebSocketApis | None = None
    websocket_connections: Connections | None = None
    #: cluster mode: the `@connections` API for connections other nodes hold
    connection_relay: ConnectionRelay | None = None
    #: durable executions (`events.durable.DurableRunner`); None: not served
    durable: DurableRunner | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.lamina
    return state
