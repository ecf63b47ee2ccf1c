"""Benchmark a Lamina cluster: warm invoke throughput on 1, 2 and 4 nodes, and what a
forwarded invoke adds to a local one.

Run: ``.venv/bin/python bench/cluster.py [--duration SECONDS] [--share CPUS]
[--connections N] [--nodes 1,2,4]`` (or ``make bench-cluster ARGS="..."``), as root.

What it measures
----------------
The engines are the benchmark's own, as the cluster tests start them
(tests/cluster/_engines.py): one PostgreSQL and a 3-server NATS JetStream cluster on free
ports in temporary directories. Each cluster size gets a fresh database and cluster name, and
N nodes ``lamina serve --cluster`` at the defaults a user gets (authentication on with an
admin key, the default sandbox, the default front workers), the first node's sealing key
copied into the others' data directories before they start.

Each node is a simulated host: its whole process tree (server, front workers, environments:
Lamina puts its environments' cgroups under the server's own on cgroup v1; on v2 they are at
the root, outside, and only the server and its workers are confined) runs in a cgroup of
its own whose CPU is capped at ``--share`` CPUs (default 0.25; CFS quota, ``cpu.max`` on cgroup
v2), the same for every node and every cluster size; on 2 CPUs 4 x 0.25 leaves one for wrk,
PostgreSQL and NATS, which are not confined. The CPUs each node used and how often it was
throttled are printed: a size whose nodes could not use their share shows the machine's limit,
and the report says so.

* scaling: N no-op python3.11 functions (MemorySize 1024, as bench/invoke.py), named so that
  function i hashes to node i (the router's rendezvous hashing), so each node runs its own
  function locally, as a cluster spreads many functions over its nodes. One wrk per node,
  all at once (``-c --connections``), each replaying one signed Invoke of its node's
  function to that node; req/s summed (the mean of ``--rounds`` runs). Target (issue 20):
  4 nodes >= 3.2x 1 node.
* forwarding: on the 2-node cluster, c1 runs of the function that hashes to node 0, warm
  there: sent to node 0 (local: it has an idle environment) and to node 1 (forwarded: node 1
  has none, so its router sends the invoke over NATS to node 0), alternated, twice each.
  /lamina/environments is checked before and after: the function's environments are on
  node 0 only. Target: the forwarded p50 minus the local p50 (the floor, same run) <= 0.5 ms.

Exit status: 0 when every run was clean (targets met or not), 1 when a server, an engine or
a cgroup failed to start, a check failed, or a run had non-2xx responses or socket errors
(INVALID), 2 without wrk or without root, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from harness import (
    HOST,
    BenchError,
    Server,
    WrkResult,
    cpu_seconds_between,
    free_port,
    guarded,
    handler_zip,
    http_ok,
    lambda_client,
    log,
    run_wrk,
    start_server,
    stop_server,
    tree_cpu,
    unbroken_cleanup,
    wait_ready,
)
from invoke import INVOKE_BODY, MEMORY_MB, NOOP_HANDLER, check_auth, signed_post
from lamina.cluster.hashing import owner
from lamina.cluster.routing import version_key
from lamina.settings import default_workers
from lamina.store.sealed import KEY_FILE
from signing import admin_key_args, signed_headers

# The cluster tests' engines (PostgreSQL, a NATS JetStream cluster), imported from the repo.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from tests.cluster._engines import NatsCluster, Postgres, nats_cluster, postgres

TARGET_SCALING_X = 3.2
TARGET_FORWARD_ADDED_MS = 0.5
WARMUP_SECONDS = 3
LATENCY_ROUNDS = 2
CPU_PERIOD_US = 100_000
VERSION = "$LATEST"
NODE_READY_S = 90.0


# --- cgroups --------------------------------------------------------------------------------


@dataclass
class CpuCgroups:
    """A parent cgroup of the benchmark's own (`bench-cluster-<pid>`: not `lamina-<pid>`,
    which Lamina servers sweep) holding one child per node, each capped at `share` CPUs."""

    parent: Path
    version: int
    share: float
    children: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, share: float) -> CpuCgroups:
        name = f"bench-cluster-{os.getpid()}"
        v1, v2 = _cpu_mounts()
        if v1 is not None:
            parent = Path(v1 + _own_cgroup("cpu")) / name
            parent.mkdir()
            return cls(parent, 1, share)
        if v2 is not None:
            # v2 forbids controllers below a cgroup holding processes: a parent at the root
            _write(Path(v2) / "cgroup.subtree_control", "+cpu")
            parent = Path(v2) / name
            parent.mkdir()
            _write(parent / "cgroup.subtree_control", "+cpu")
            return cls(parent, 2, share)
        raise BenchError("no cpu cgroup controller (v1 or v2) on this host")

    def add(self, node: str) -> Path:
        path = self.parent / node
        path.mkdir()
        self.children.append(path)
        quota = int(self.share * CPU_PERIOD_US)
        if self.version == 1:
            _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(path / "cpu.cfs_quota_us", str(quota))
        else:
            _write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        return path

    def throttled(self, path: Path) -> tuple[int, int]:
        """(periods, throttled periods) from the cgroup's cpu.stat."""
        stat: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (path / "cpu.stat").read_text().splitlines():
                key, value = line.split()
                stat[key] = int(value)
        return stat.get("nr_periods", 0), stat.get("nr_throttled", 0)

    def remove(self, path: Path | None = None) -> None:
        """Kill whatever is left in `path` (default: all of it) and remove its cgroups,
        deepest first (Lamina's own under a node's, left by a server that was killed)."""
        top = path or self.parent
        if not top.exists():
            return
        dirs = [Path(d) for d, _, _ in os.walk(top, topdown=False)]
        for d in dirs:
            with contextlib.suppress(OSError, ValueError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for d in dirs:
            _rmdir(d)
        if path is not None and path in self.children:
            self.children.remove(path)


def _cpu_mounts() -> tuple[str | None, str | None]:
    """Where the v1 cpu controller is mounted, and the v2 mount if it offers `cpu`."""
    v1 = v2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options, point = fields[sep + 1], fields[sep + 3], fields[4]
            if fstype == "cgroup" and "cpu" in options.split(","):
                v1 = point
            elif fstype == "cgroup2" and v2 is None:
                with contextlib.suppress(OSError):
                    if "cpu" in Path(point, "cgroup.controllers").read_text().split():
                        v2 = point
    return v1, v2


def _own_cgroup(controller: str) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path.rstrip("/")
    return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _rmdir(path: Path) -> None:
    deadline = time.monotonic() + 5.0
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                log(f"could not remove cgroup {path}: {exc}")
                return
            time.sleep(0.02)


# --- a cluster ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    server: Server
    port: int
    cgroup: Path
    data: Path

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Cluster:
    nodes: list[Node]
    functions: list[str]  # functions[i] hashes to nodes[i]

    def invoke_url(self, node: int, function: int) -> str:
        path = f"/2015-03-31/functions/{self.functions[function]}/invocations"
        return self.nodes[node].endpoint + path


def _get_json(port: int, path: str) -> Any:
    conn = HTTPConnection(HOST, port, timeout=10)
    try:
        headers = signed_headers("GET", f"http://{HOST}:{port}{path}", b"", {})
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path} on port {port}: {response.status} {body[:200]!r}")
        return json.loads(body)
    except (HTTPException, OSError, ValueError) as exc:
        raise BenchError(f"GET {path} on port {port} failed: {exc!r}") from exc
    finally:
        conn.close()


def environments(node: Node) -> dict[str, int]:
    """How many environments `node` has per function."""
    counts: dict[str, int] = {}
    for env in _get_json(node.port, "/lamina/environments")["Environments"]:
        counts[env["FunctionName"]] = counts.get(env["FunctionName"], 0) + 1
    return counts


def _wait(what: str, check: Any, timeout: float = NODE_READY_S) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except BenchError as exc:
            last = f": {exc}"
        time.sleep(0.2)
    raise BenchError(f"{what} not so after {timeout:.0f} s{last}")


def function_names(nodes: Sequence[str]) -> list[str]:
    """One function name per node, hashing to it among `nodes` (as the router hashes)."""
    names: dict[str, str] = {}
    for k in range(10_000):
        name = f"bench-noop-{k}"
        node = owner(version_key(name, VERSION), nodes)
        if node is not None and node not in names:
            names[node] = name
        if len(names) == len(nodes):
            return [names[n] for n in nodes]
    raise BenchError("no function names found that hash to every node")


def start_cluster(
    stack: contextlib.ExitStack,
    tmp: Path,
    cgroups: CpuCgroups,
    pg: Postgres,
    nats: NatsCluster,
    size: int,
) -> Cluster:
    """`size` nodes on a fresh database, each in its cgroup, with their functions deployed
    and warm on the nodes they hash to; stopped (and their cgroups removed) with `stack`."""
    database = pg.new_database()
    cluster_name = f"b{uuid.uuid4().hex[:8]}"
    nodes: list[Node] = []
    for i in range(size):
        name = f"node{i}"
        data = tmp / f"{cluster_name}-{name}"
        data.mkdir()
        if nodes:
            shutil.copy2(nodes[0].data / KEY_FILE, data / KEY_FILE)
        port = free_port()
        cgroup = cgroups.add(f"{cluster_name}-{name}")
        stack.callback(cgroups.remove, cgroup)
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(data), "--log-level", "warning", *admin_key_args()]
        argv += ["--cluster", "--database", database, "--nats", ",".join(nats.urls)]
        argv += ["--node-name", name, "--cluster-name", cluster_name]
        # the node's first process enters its cgroup before it runs Lamina
        entered = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv]
        server = start_server(f"{name} of {size}", entered, tmp, tmp / f"{cluster_name}-{name}.log")
        stack.callback(stop_server, server)
        node = Node(name, server, port, cgroup, data)
        wait_ready(server, functools.partial(http_ok, f"{node.endpoint}/health", None, True))
        nodes.append(node)
    for node in nodes:
        _wait(
            f"{node.name} sees {size} healthy nodes",
            lambda node=node: (
                sum(n["Healthy"] for n in _get_json(node.port, "/lamina/nodes")["Nodes"]) == size
            ),
        )
    names = function_names([n.name for n in nodes])
    cluster = Cluster(nodes, names)
    deploy(cluster)
    return cluster


def deploy(cluster: Cluster) -> None:
    """Create each node's function through node 0, then invoke it once through its node
    (once it is known there) and check that its environment is on that node."""
    client = lambda_client(cluster.nodes[0].endpoint)
    try:
        for name in cluster.functions:
            client.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": handler_zip(NOOP_HANDLER)},
                MemorySize=MEMORY_MB,
            )
        waiter = client.get_waiter("function_active_v2")
        for name in cluster.functions:
            waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    except (BotoCoreError, ClientError, WaiterError) as exc:
        raise BenchError(f"creating the functions failed: {exc}") from exc
    for node, name in zip(cluster.nodes, cluster.functions, strict=True):
        node_client = lambda_client(node.endpoint)

        def invoked(node_client: Any = node_client, name: str = name, node: Node = node) -> bool:
            try:
                response = node_client.invoke(FunctionName=name, Payload=INVOKE_BODY)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                    return False
                raise BenchError(f"invoke of {name} on {node.name}: {exc}") from exc
            if response.get("FunctionError") or response["StatusCode"] != 200:
                raise BenchError(f"invoke of {name} on {node.name} failed")
            return True

        _wait(f"{name} invoked on {node.name}", invoked)
        check_auth(node.port, f"/2015-03-31/functions/{name}/invocations", auth=True)
    check_placement(cluster, "after the first invokes")


def check_placement(cluster: Cluster, when: str) -> list[str]:
    """Each function's environments are on its own node only; what was seen, in words."""
    seen = []
    for node, own in zip(cluster.nodes, cluster.functions, strict=True):
        envs = environments(node)
        stray = {f: n for f, n in envs.items() if f != own}
        if not envs.get(own) or stray:
            raise BenchError(f"{when}: {node.name} has environments {envs}, expected only {own}'s")
        seen.append(f"{node.name}: {envs[own]} of {own}")
    return seen


# --- measurements ---------------------------------------------------------------------------


@dataclass
class ScalingRun:
    """One wrk per node at once."""

    runs: list[WrkResult]
    #: per node, the share of CFS periods in which it was throttled
    throttled: list[float]
    #: per node, CPUs its process tree used (CPU seconds over the run's seconds)
    cpus: list[float]
    seconds: float

    @property
    def rps(self) -> float:
        return sum(r.rps for r in self.runs)


@dataclass
class Scaling:
    size: int
    rounds: list[ScalingRun]
    placement: list[str]

    @property
    def rps(self) -> float:
        """Summed req/s, the mean of the rounds."""
        return statistics.mean(r.rps for r in self.rounds)

    def node_mean(self, node: int, of: str) -> float:
        """The mean over the rounds of node `node`'s "rps", "p50", "cpus" or "throttled"."""
        values = {
            "rps": [r.runs[node].rps for r in self.rounds],
            "p50": [r.runs[node].p50_ms for r in self.rounds],
            "cpus": [r.cpus[node] for r in self.rounds],
            "throttled": [r.throttled[node] for r in self.rounds],
        }
        return statistics.mean(values[of])

    @property
    def cpu_us_per_request(self) -> float:
        """CPU time of all the nodes' process trees per request, over the rounds."""
        cpu = sum(sum(r.cpus) * r.seconds for r in self.rounds)
        requests = sum(w.requests for r in self.rounds for w in r.runs)
        return cpu * 1e6 / requests if requests else float("nan")

    def problems(self) -> list[str]:
        return [
            f"{self.size} nodes, round {k + 1}, node{i}: {p}"
            for k, round_ in enumerate(self.rounds)
            for i, r in enumerate(round_.runs)
            for p in r.problems()
        ]


def _parallel_wrk(cluster: Cluster, tmp: Path, connections: int, seconds: int) -> list[WrkResult]:
    scripts = []
    for i in range(len(cluster.nodes)):
        d = tmp / f"wrk-{i}"
        d.mkdir(exist_ok=True)
        scripts.append(signed_post(cluster.invoke_url(i, i))(d))
    with ThreadPoolExecutor(len(scripts)) as pool:
        futures = [
            pool.submit(run_wrk, cluster.invoke_url(i, i), connections, seconds, script)
            for i, script in enumerate(scripts)
        ]
        return [f.result() for f in futures]


def measure_scaling(
    cluster: Cluster, cgroups: CpuCgroups, tmp: Path, args: argparse.Namespace
) -> Scaling:
    size, connections, seconds = len(cluster.nodes), args.connections, args.duration
    log(f"{size} nodes: c{connections} per node, warm-up for {WARMUP_SECONDS} s")
    _parallel_wrk(cluster, tmp, connections, WARMUP_SECONDS)
    rounds = []
    for k in range(args.rounds):
        log(f"{size} nodes: c{connections} per node for {seconds} s, round {k + 1}")
        before = [cgroups.throttled(n.cgroup) for n in cluster.nodes]
        cpu_before = [tree_cpu(n.server.proc.pid) for n in cluster.nodes]
        started = time.monotonic()
        runs = _parallel_wrk(cluster, tmp, connections, seconds)
        took = time.monotonic() - started
        cpu_after = [tree_cpu(n.server.proc.pid) for n in cluster.nodes]
        after = [cgroups.throttled(n.cgroup) for n in cluster.nodes]
        throttled = [_throttled_share(b, a) for b, a in zip(before, after, strict=True)]
        cpus = [
            cpu_seconds_between(b, a) / took for b, a in zip(cpu_before, cpu_after, strict=True)
        ]
        rounds.append(ScalingRun(runs, throttled, cpus, took))
    placement = check_placement(cluster, f"after the {size}-node runs")
    return Scaling(size, rounds, placement)


@dataclass
class Latency:
    local: list[WrkResult]
    forwarded: list[WrkResult]
    placement: list[str]
    #: per run (local runs, then forwarded), the share of CFS periods each node was throttled
    throttled: list[list[float]]

    @property
    def local_p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.local)

    @property
    def forwarded_p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.forwarded)

    def problems(self) -> list[str]:
        found = [f"local: {p}" for r in self.local for p in r.problems()]
        return found + [f"forwarded: {p}" for r in self.forwarded for p in r.problems()]


def function_placement(cluster: Cluster, function: int) -> list[str]:
    """The function's environments are on its node and no other; what was seen."""
    name = cluster.functions[function]
    counts = [environments(node).get(name, 0) for node in cluster.nodes]
    if counts[function] == 0 or sum(counts) != counts[function]:
        raise BenchError(
            f"{name}'s environments per node are {counts}: expected node{function} only"
        )
    return [f"{n.name}: {c} of {name}" for n, c in zip(cluster.nodes, counts, strict=True)]


def _throttled_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    periods = after[0] - before[0]
    return (after[1] - before[1]) / periods if periods > 0 else 0.0


def measure_forwarding(cluster: Cluster, cgroups: CpuCgroups, tmp: Path, seconds: int) -> Latency:
    """c1 of node 0's function through node 0 (local) and node 1 (forwarded), alternated."""
    function_placement(cluster, 0)
    d = tmp / "latency"
    d.mkdir(exist_ok=True)
    local: list[WrkResult] = []
    forwarded: list[WrkResult] = []
    throttled: dict[int, list[list[float]]] = {0: [], 1: []}
    for round_ in range(LATENCY_ROUNDS):
        for node, results in ((0, local), (1, forwarded)):
            what = "local" if node == 0 else "forwarded"
            log(f"forwarding: c1 {what} (through node{node}) for {seconds} s, round {round_ + 1}")
            url = cluster.invoke_url(node, 0)
            script = signed_post(url)(d)
            before = [cgroups.throttled(n.cgroup) for n in cluster.nodes]
            results.append(run_wrk(url, 1, seconds, script))
            after = [cgroups.throttled(n.cgroup) for n in cluster.nodes]
            throttled[node].append(
                [_throttled_share(b, a) for b, a in zip(before, after, strict=True)]
            )
    placement = function_placement(cluster, 0)
    return Latency(local, forwarded, placement, throttled[0] + throttled[1])


# --- report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def latency_rows(latency: Latency) -> list[str]:
    runs = [("local (via node0)", r) for r in latency.local]
    runs += [("forwarded (via node1)", r) for r in latency.forwarded]
    rows = []
    for (what, r), shares in zip(runs, latency.throttled, strict=True):
        throttled = ", ".join(f"{t:.0%}" for t in shares)
        rows.append(
            f"  {what:<24}{_ms(r.p50_ms):>10}{_ms(r.p99_ms):>11}{r.rps:>8,.0f}   {throttled}"
        )
    return rows


def machine_bound(scalings: Sequence[Scaling], share: float) -> list[str]:
    """Say so when the nodes could not use their share: then the machine (wrk, the engines,
    other load), not the cluster, bounded the throughput at that size."""
    lines = []
    for s in scalings:
        used = [s.node_mean(i, "cpus") for i in range(s.size)]
        throttled = [s.node_mean(i, "throttled") for i in range(s.size)]
        if statistics.mean(used) < 0.9 * share:
            lines.append(
                f"note: at {s.size} nodes the nodes used {statistics.mean(used):.2f} CPU each "
                f"of their {share:g} (throttled in {min(throttled):.0%} to {max(throttled):.0%} "
                "of CFS periods): the machine ran out of CPU before the nodes did (wrk, the "
                "engines and the nodes share its CPUs, and a busier machine costs each request "
                "more: see CPU µs), so this size shows the machine's limit, not the cluster's"
            )
    return ["", *lines] if lines else []


def report(
    args: argparse.Namespace, cgroups: CpuCgroups, scalings: list[Scaling], latency: Latency | None
) -> None:
    cpus = os.cpu_count() or 1
    share_sum = args.share * max(args.sizes)
    lines = [
        f"wrk, {args.duration} s per run, loopback, {cpus} CPUs; each node in a cgroup "
        f"(v{cgroups.version}) capped at {args.share:g} CPU (CFS quota "
        f"{int(args.share * CPU_PERIOD_US)}"
        f" us per {CPU_PERIOD_US} us); PostgreSQL, NATS (3 servers) and wrk unconfined",
        f"Lamina: --cluster, auth on (SigV4; one signed request replayed by wrk), default "
        f"sandbox, front workers {default_workers()} per node, MemorySize {MEMORY_MB}, one "
        f"no-op python3.11 function per node (hashing to it)",
        f"CPU budget: {max(args.sizes)} nodes x {args.share:g} = {share_sum:g} of {cpus} CPUs; "
        f"{cpus - share_sum:g} left for wrk, PostgreSQL, NATS and whatever else runs here "
        f"(load average before the run {args.load_before:.1f}, after {os.getloadavg()[0]:.1f}: "
        "other load makes the sizes' numbers incomparable)",
        "",
        f"scaling: one wrk -c{args.connections} per node at once, {args.rounds} rounds; req/s: "
        "mean of the rounds' sums; per node: req/s, p50, CPUs used, share of CFS periods "
        "throttled (means of the rounds); CPU µs: CPU time of all the nodes' process trees per "
        "request",
        f"{'nodes':<7}{'req/s':>9}{'x 1 node':>10}{'CPU µs':>8}  {'rounds':<16}{'valid':<9}"
        "per node",
    ]
    base = next((s for s in scalings if s.size == 1), None)
    for s in scalings:
        ratio = f"{s.rps / base.rps:.2f}x" if base and base.rps else "-"
        rounds = ", ".join(f"{r.rps:,.0f}" for r in s.rounds)
        per = "; ".join(
            f"{s.node_mean(i, 'rps'):,.0f}/s {s.node_mean(i, 'p50'):.1f} ms "
            f"{s.node_mean(i, 'cpus'):.2f} CPU {s.node_mean(i, 'throttled'):.0%}"
            for i in range(s.size)
        )
        valid = "INVALID" if s.problems() else "yes"
        cpu = f"{s.cpu_us_per_request:,.0f}"
        lines.append(f"{s.size:<7}{s.rps:>9,.0f}{ratio:>10}{cpu:>8}  {rounds:<16}{valid:<9}{per}")
    for s in scalings:
        lines.append(f"  placement after {s.size}-node run: {'; '.join(s.placement)}")
    if latency is not None:
        lines += [
            "",
            "forwarding (2 nodes, c1, node0's function; local and forwarded runs alternated):",
            f"  {'run':<24}{'p50':>10}{'p99':>11}{'req/s':>8}   throttled: node0, node1",
            *latency_rows(latency),
            f"  placement after: {'; '.join(latency.placement)}",
        ]
    lines += ["", "targets (issue 20):"]
    top = max(scalings, key=lambda s: s.size)
    if base is None or top.size == 1:
        lines.append("  scaling: not judged (needs 1 node and more)")
    elif base.problems() or top.problems():
        lines.append("  scaling: not judged: a run is INVALID")
    else:
        x = top.rps / base.rps
        bound = TARGET_SCALING_X * top.size / 4
        lines.append(
            f"  {top.size} nodes >= {bound:g}x 1 node: {_verdict(x >= bound)} ({x:.2f}x: "
            f"{top.rps:,.0f}/s vs {base.rps:,.0f}/s)"
        )
    if latency is None:
        lines.append("  forwarded p50 added: not judged (needs 2 nodes)")
    elif latency.problems():
        lines.append("  forwarded p50 added: not judged: a run is INVALID")
    else:
        added = latency.forwarded_p50 - latency.local_p50
        lines.append(
            f"  forwarded p50 - local p50 <= {TARGET_FORWARD_ADDED_MS} ms: "
            f"{_verdict(added <= TARGET_FORWARD_ADDED_MS)} ({_ms(added)}: "
            f"{_ms(latency.forwarded_p50)} vs {_ms(latency.local_p50)}, medians of the rounds)"
        )
    lines += machine_bound(scalings, args.share)
    problems = [p for s in scalings for p in s.problems()]
    problems += latency.problems() if latency else []
    if problems:
        lines += ["", "problems:", *[f"  INVALID {p}" for p in problems]]
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--share", type=float, default=0.25, help="CPUs per node (CFS quota)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections per node")
    parser.add_argument("--nodes", default="1,2,4", help="cluster sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs per size")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    if not 0.01 <= args.share <= (os.cpu_count() or 1):
        parser.error("--share must be between 0.01 and the machine's CPUs")
    try:
        args.sizes = sorted({int(n) for n in args.nodes.split(",")})
    except ValueError:
        parser.error("--nodes takes sizes like 1,2,4")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--nodes takes sizes of 1 and more")
    return args


@contextlib.contextmanager
def engines() -> Iterator[tuple[Postgres, NatsCluster]]:
    log("starting PostgreSQL and a 3-server NATS JetStream cluster")
    try:
        with postgres() as pg, nats_cluster(3) as nats:
            yield pg, nats
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise BenchError(f"the engines failed: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: needs root (cgroups, Lamina's namespace sandbox)", file=sys.stderr)
        return 2
    scalings: list[Scaling] = []
    latency: list[Latency] = []
    args.load_before = os.getloadavg()[0]

    def work() -> CpuCgroups:
        with contextlib.ExitStack() as stack, unbroken_cleanup():
            tmp_dir = tempfile.TemporaryDirectory(
                prefix="lamina-bench-", ignore_cleanup_errors=True
            )
            tmp = Path(stack.enter_context(tmp_dir))
            cgroups = CpuCgroups.create(args.share)
            stack.callback(cgroups.remove)
            log(f"cgroup v{cgroups.version} {cgroups.parent}: {args.share:g} CPU per node")
            pg, nats = stack.enter_context(engines())
            for size in args.sizes:
                with contextlib.ExitStack() as round_stack:
                    cluster = start_cluster(round_stack, tmp, cgroups, pg, nats, size)
                    scalings.append(measure_scaling(cluster, cgroups, tmp, args))
                    if size == 2:
                        latency.append(measure_forwarding(cluster, cgroups, tmp, args.duration))
            return cgroups

    cgroups = guarded(work)
    report(args, cgroups, scalings, latency[0] if latency else None)
    invalid = any(s.problems() for s in scalings) or any(lat.problems() for lat in latency)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
