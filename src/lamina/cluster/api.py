"""The seams between a node and the rest of its cluster, as Protocols.

The single-machine default is one implementation of each (`cluster.local`: one node, every
lease its own, no peers); cluster mode is another, on NATS JetStream (`cluster.nats`,
`cluster.nodes`, `cluster.leases`, `cluster.blobs`, `cluster.feed`, `cluster.routing`) and
PostgreSQL (the store layer, `store/`, on a `postgresql://` URL). Both run under the same
tests wherever a test can tell them apart.

Who uses what:
- `NodeDirectory`: the live nodes and their load (`lamina nodes`, `/lamina/nodes`,
  invoke routing, lease holders' liveness).
- `Leases`: one holder at a time for a named job (an event-source mapping's pollers, a
  schedule's ticks), expiring with its holder within `ttl_s`.
- `BlobStore`: code packages and layer contents, content-addressed (SHA-256 hex), readable by
  every node; each node keeps its own unpacked copy (`store.blobs.CodeStore`).
- `ChangeFeed`: "this piece of control-plane state changed in the database": each node
  re-reads it and updates what it keeps in memory (its caches and its environments).
- `InvokeRouter`: where an invocation runs (here, or forwarded to another node).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class NodeLoad:
    """What a node reports of itself with each heartbeat."""

    #: live execution environments, and how many of them are busy with an invocation
    environments: int = 0
    busy: int = 0
    #: MB of MemorySize its live environments take, and its capacity (`--memory-capacity`)
    memory_used_mb: int = 0
    memory_capacity_mb: int = 0
    #: per function version ("name:version"), idle warm environments ready for an invoke
    idle: Mapping[str, int] = field(default_factory=dict)
    #: per function version ("name:version"), provisioned environments initialised here
    provisioned: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    #: the URL of the node's API (what clients and `lamina nodes` use)
    endpoint: str
    #: seconds since the epoch
    started_at: float
    heartbeat_at: float
    load: NodeLoad = field(default_factory=NodeLoad)
    #: empty when healthy; otherwise what is wrong ("database unreachable: ...")
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems


class NodeDirectory(Protocol):
    @property
    def self_name(self) -> str:
        """This node's name."""

    def live(self) -> list[NodeInfo]:
        """The nodes whose heartbeat has not expired, this one included, sorted by name
        (a view kept current in the background: no I/O)."""

    async def start(self) -> None:
        """Join: refuse (raise `ClusterConfigError`) if a live node already has this name;
        then heartbeat until `close`."""

    async def close(self) -> None:
        """Leave: the node's entry is removed at once (not left to expire)."""


class ClusterConfigError(Exception):
    """A node cannot join as configured (unreachable database or NATS, schema older or newer
    than the code, a name a live node has, a sealing key that is not the cluster's). The
    message says exactly what; `lamina serve` prints it and exits non-zero."""


LeaseLost = Callable[[str], Awaitable[None]]


class Leases(Protocol):
    """Named leases held by one live node at a time. A held lease is renewed in the
    background every `ttl_s / 3`; one that cannot be renewed (another node took it after it
    expired, or NATS was unreachable for `ttl_s`) is reported to `on_lost` at once and is no
    longer held."""

    ttl_s: float

    async def acquire(self, key: str) -> bool:
        """Take `key` if nobody holds it (or it is already ours); True if held now."""

    async def release(self, key: str) -> None:
        """Give `key` up (no-op if not held)."""

    def held(self) -> frozenset[str]:
        """The keys held now."""

    def on_lost(self, callback: LeaseLost) -> None:
        """Call `callback(key)` when a held key is lost."""


class BlobStore(Protocol):
    async def put(self, sha256: str, source: Path) -> None:
        """Store the file at `source` under its digest (a no-op if present)."""

    async def fetch(self, sha256: str, dest: Path) -> bool:
        """Write the blob to `dest` (verified against its digest); False if there is none."""

    async def delete(self, sha256: str) -> None:
        """Forget the blob (no-op if absent)."""


ChangeHandler = Callable[[str, str], Awaitable[None]]


class ChangeFeed(Protocol):
    """Areas (`AREAS`) and keys (an area's own: a function name, a role name, a mapping UUID,
    "*" for the whole area) of control-plane state another node changed in the database."""

    async def publish(self, area: str, key: str) -> None:
        """Tell the other nodes (not this one) that `area`/`key` changed; after the change
        is committed."""

    def subscribe(self, handler: ChangeHandler) -> None:
        """Call `handler(area, key)` for every change another node publishes."""


#: the areas of control-plane state a `ChangeFeed` names
AREAS = (
    "function",  # key: function name (its versions, aliases, URLs, policies, settings)
    "layer",  # key: layer name
    "role",  # key: role name
    "rule",  # key: "bus/rule"
    "mapping",  # key: mapping UUID
    "broker",  # key: broker name
    "route",  # key: "*"
    "key",  # key: access key id
    "code-signing",  # key: code signing configuration id, or "*" (trusted signers)
    "capacity-provider",  # key: capacity provider name
)


@dataclass(frozen=True)
class ForwardedInvoke:
    """An Invoke as the receiving node resolved and authorized it, for another node to run."""

    function_name: str
    #: the version the qualifier resolved to (an alias's weights are applied by the receiver)
    version: str
    #: the qualifier the caller gave (alias or version), for `ExecutedVersion`/ARN in context
    qualifier: str | None
    payload: bytes
    #: "RequestResponse" or "DryRun" (asynchronous events go through the async queue)
    invocation_type: str
    log_type: str | None = None
    #: X-Amz-Client-Context decoded (the JSON text the function sees), checked by the receiver
    client_context: str | None = None
    #: the caller's X-Amzn-Trace-Id as it came (the running node continues its lineage)
    trace_header: str | None = None
    request_id: str | None = None
    #: the caller's X-Amz-Tenant-Id (validated by the receiver)
    tenant_id: str | None = None


@dataclass(frozen=True)
class ForwardedResult:
    """What the node that ran a `ForwardedInvoke` answered: the HTTP status, headers and body
    the receiving node sends its client as they are."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class InvokeRouter(Protocol):
    def choose(self, function_name: str, version: str) -> str | None:
        """The node to run an invocation of this version on: None for this node (it has an
        idle environment, or the function hashes here, or it is alone), else a live node's
        name."""

    async def forward(
        self, node: str, invoke: ForwardedInvoke, *, timeout_s: float = ...
    ) -> ForwardedResult:
        """Run `invoke` on `node` and return its answer. `timeout_s` is the function's
        Timeout (the router adds what a cold start may take). Raises `NodeUnavailable` if
        the node does not answer (the caller runs it here instead)."""


class NodeUnavailable(Exception):
    """The node an invocation was forwarded to did not take it (gone, or not answering)."""
