"""Lamina nodes of a test's own cluster: `lamina serve --cluster` processes on free ports,
each with its own data directory, on the session's PostgreSQL (a database per cluster) and
3-server NATS (a cluster name per cluster, so clusters of different tests never meet)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Server

from lamina.store.sealed import KEY_FILE


@dataclass
class LaminaCluster:
    base: Path
    database_url: str
    nats_urls: list[str]
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    nodes: dict[str, Server] = field(default_factory=dict)
    #: seconds a node's heartbeat lives (what the tests wait for a dead node to go)
    ttl_s: float = 5.0

    def args(self, node: str, nats_urls: list[str] | None = None) -> tuple[str, ...]:
        return (
            "--cluster",
            "--database",
            self.database_url,
            "--nats",
            ",".join(nats_urls or self.nats_urls),
            "--node-name",
            node,
            "--cluster-name",
            self.name,
        )

    def node(
        self, name: str, *extra: str, start: bool = True, nats_urls: list[str] | None = None
    ) -> Server:
        """A node (started unless `start` is false) sharing the cluster's sealing key: the
        first node's key file is copied into each later node's data directory, as an
        operator copies it (docs/cluster.md). `nats_urls` replaces the cluster's NATS URLs
        for this node (one that reaches NATS through a proxy)."""
        data = self.base / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        first = next(iter(self.nodes.values()), None)
        if first is not None and (first.data_dir / KEY_FILE).exists():
            shutil.copy2(first.data_dir / KEY_FILE, data / KEY_FILE)
        # at info, what a node decided (placement, code fetched) is in the log a failed
        # test prints
        args = (*self.args(name, nats_urls), "--log-level", "info", *extra)
        server = Server(data_dir=data, extra_args=args)
        self.nodes[name] = server
        if start:
            server.start(timeout=60.0)
        return server

    def stop(self) -> None:
        for server in self.nodes.values():
            if server.proc is not None and server.proc.poll() is None:
                server.stop()

    def print_logs(self, tail: int = 40000) -> None:
        """The end of each node's log, on stdout."""
        for name, server in self.nodes.items():
            print(f"--- node {name} (port {server.port}) ---")
            print(server.log()[-tail:])
