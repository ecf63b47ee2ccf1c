"""Benchmark SnapStart: cold starts of a heavy Python function with and without it, beside a
no-op SnapStart function and the fork floor, in one run; then the memory of restored idle
environments.

Run: ``.venv/bin/python bench/snapstart.py`` (or ``make bench-snapstart ARGS="..."``), as root.

What it measures
----------------
The function code: numpy, Pillow, pydantic and requests, pip-installed (binary wheels only,
with the python3.12 runtime's own interpreter, so the wheels fit its version and this machine)
into a cache under /var/tmp reused between runs, and ``app.py``, which imports all four at
module level and builds module state (a 1000x1000 float array, a pydantic model class and an
instance, a Pillow image, a requests session). Its handler returns ``{"ok": true}``, after
sleeping ``event["sleep"]`` seconds when the event asks. The no-op function is
``return {"ok": True}``. All are python3.12, MemorySize ``--memory`` (1769: one vCPU, so the
CPU cap that follows memory does not bind; at 128 MB it would stretch the heavy init ~14x).

Latency: one ``lamina serve --admin-key test:test --sandbox namespace --idle-timeout 0.1`` on
127.0.0.1 with a fresh data dir (authentication on, as users run it). Three published
versions: the heavy function without SnapStart, the heavy function with
``SnapStart.ApplyOn=PublishedVersions`` and the no-op with SnapStart, each version waited on
until ``State`` is ``Active``. Each is invoked ``--heavy-samples`` (10) or ``--samples`` (30)
times, ``--pause`` (0.3) s apart: environments idle past the 0.1 s idle timeout are reaped, so
every invoke is a cold start. Every Invoke is raw HTTP (`cold_load.Invoker`), SigV4-signed per
request before its clock starts, with ``LogType=Tail``: the client's time from request to full
response, and the server's ``Init Duration`` or ``Restore Duration`` from the REPORT line. An
invoke whose REPORT has neither (a warm one) or the wrong one (a SnapStart version showing
``Init Duration``: its template did not survive the reaping) is reported and makes the run
INVALID. The fork floor (`cold_floors.py`: fork from a lean warm Python to a result) is
measured first, in the same run; every figure is also printed as a multiple of its p50.

Memory: a second server, at the default idle timeout, with the heavy SnapStart version only.
``--environments`` (5) concurrent invokes of it that each sleep 1 s make as many restored
environments; once idle, for each (the runtime's pid from ``GET /lamina/environments`` and its
parent, the sandbox's init) ``/proc/PID/smaps_rollup`` (Pss, and USS = Private_Clean +
Private_Dirty) and the environment's memory cgroup (``memory.usage_in_bytes`` on cgroup v1,
``memory.current`` on v2). What the function's own writes dirty is measured beside it: the
same runtime interpreter (``-B -S``) imports ``app.py``, forks, and the child calls the handler
once; the child's USS when idle is that figure. Target: an environment's USS (init + runtime)
<= that + 5 MiB.

Percentiles are nearest-rank. Exit status: 0 when everything could be measured (targets met or
not), 1 when a server, the build or an invoke failed or an invoke was not a cold start
(INVALID), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from botocore.exceptions import BotoCoreError, ClientError

from cold_floors import Floors, floor_lines, measure_floors
from cold_load import HELLO_HANDLER, Answer, Invoker
from coldstart import Variant, fresh, get_json, phase_means, phases, start_lamina
from harness import (
    HOST,
    BenchError,
    guarded,
    lambda_client,
    log,
    process_tree,
    unbroken_cleanup,
)
from lamina.runtimes.catalog import RuntimeCatalog

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

RUNTIME: Final = "python3.12"  # SnapStart takes Python 3.12 and later
PACKAGES = ("numpy", "pillow", "pydantic", "requests")
CACHE_ROOT = Path("/var/tmp/lamina-bench-snapstart")
#: Lambda's limits for a deployment package uploaded without S3 (CreateFunction's ZipFile)
ZIPPED_LIMIT = 50 * 1024 * 1024
UNZIPPED_LIMIT = 250 * 1024 * 1024
ROLE = "arn:aws:iam::000000000000:role/bench"
ACTIVE_TIMEOUT_S = 180.0
#: cut from the installed packages only when the package would be over a limit without them
STRIPPABLE = ("tests", "__pycache__")

PHASES = ("sandbox", "start", "init")
TARGET_SNAP_P50_MS = 10.0
TARGET_EXTRA_MIB = 5.0

HEAVY_HANDLER = """\
import time

import numpy
import PIL.Image
import pydantic
import requests


class Item(pydantic.BaseModel):
    name: str
    size: int
    tags: list[str] = []


# Module state built at init: what SnapStart keeps and a cold start without it rebuilds.
TABLE = numpy.arange(1_000_000, dtype=numpy.float64).reshape(1000, 1000)
ITEM = Item(name="table", size=int(TABLE.size), tags=["init"])
IMAGE = PIL.Image.new("RGB", (64, 64), (12, 34, 56))
SESSION = requests.Session()


def handler(event, context):
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    return {"ok": True}
"""

#: Run by the runtime's interpreter (``-B -S``, as Lamina starts it) with the code dir as
#: argv[1]: import app.py, fork, call the handler once in the child; print the idle child's
#: memory. What the function's own writes dirty in a forked copy of its initialised state.
OWN_WRITES_SCRIPT = """\
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import app

def rollup(pid):
    found = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            found[parts[0].rstrip(":")] = int(parts[1])
    return found

ready_r, ready_w = os.pipe()
hold_r, hold_w = os.pipe()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        os.close(ready_r)
        os.close(hold_w)
        json.dumps(app.handler({"sleep": 0.01}, None))
        os.write(ready_w, b"x")
        os.read(hold_r, 1)  # idle until the parent has looked
        code = 0
    finally:
        os._exit(code)
os.close(ready_w)
os.close(hold_r)
os.read(ready_r, 1)
time.sleep(0.2)
child = rollup(pid)
os.close(hold_w)
os.waitpid(pid, 0)
print(json.dumps({"child": child, "parent": rollup(os.getpid())}))
"""


# --- the code -------------------------------------------------------------------------------


@dataclass
class Code:
    heavy_zip: bytes
    noop_zip: bytes
    site: Path  # where the packages are installed (the cache)
    unzipped_mib: float
    stripped: bool
    python: str  # the runtime's interpreter
    versions: dict[str, str] = field(default_factory=dict)


def runtime_python() -> str:
    runtime = RuntimeCatalog.discover().get(RUNTIME)
    if runtime is None:
        raise BenchError(f"this host cannot run {RUNTIME} (SnapStart needs Python 3.12+)")
    return runtime.executable


def install_packages(python: str) -> Path:
    """The packages installed for `python` into a cache directory (made once per interpreter
    version and machine)."""
    version = subprocess.run(
        [python, "-c", "import sys, platform; print(sys.version.split()[0], platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    key = hashlib.sha256(f"{version} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    site = CACHE_ROOT / f"site-{version.replace(' ', '-')}-{key}"
    if (site / ".complete").exists():
        log(f"code: packages cached in {site}")
        return site
    log(f"code: pip-installing {' '.join(PACKAGES)} for {python} ({version}) into {site}")
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--target", str(partial), *PACKAGES]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"pip install failed ({done.returncode}):\n{done.stderr[-2000:]}")
    (partial / ".complete").touch()
    shutil.rmtree(site, ignore_errors=True)
    partial.rename(site)
    return site


def _files(site: Path, strip: bool) -> list[Path]:
    found = []
    for path in sorted(site.rglob("*")):
        parts = path.relative_to(site).parts
        if not path.is_file() or parts[0] in ("bin", ".complete"):
            continue
        if strip and any(part in STRIPPABLE for part in parts):
            continue
        found.append(path)
    return found


def _zip(site: Path, files: Sequence[Path], handler: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", handler)
        for path in files:
            archive.write(path, str(path.relative_to(site)))
    return buffer.getvalue()


def build_code(strip: bool) -> Code:
    """The heavy and no-op packages; the heavy one without tests/ and __pycache__/ when
    `strip` or when it would be over Lambda's limits with them (pip compiles bytecode into
    __pycache__/ by default: without it, every init without SnapStart compiles the packages'
    sources, since the runtime runs with -B and writes none)."""
    python = runtime_python()
    site = install_packages(python)
    cached = site.with_name(site.name + ("-heavy-stripped.zip" if strip else "-heavy.zip"))
    digest = hashlib.sha256(HEAVY_HANDLER.encode()).hexdigest()[:12]
    stamp = cached.with_name(cached.name + ".meta")
    meta: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(stamp.read_text())
    if meta.get("handler") != digest or not cached.exists():
        stripped = strip
        files = _files(site, strip=strip)
        unzipped = sum(f.stat().st_size for f in files)
        data = _zip(site, files, HEAVY_HANDLER)
        if not strip and (len(data) > ZIPPED_LIMIT or unzipped > UNZIPPED_LIMIT):
            log("code: over Lambda's upload limits, without tests/ and __pycache__/")
            stripped = True
            files = _files(site, strip=True)
            unzipped = sum(f.stat().st_size for f in files)
            data = _zip(site, files, HEAVY_HANDLER)
        if len(data) > ZIPPED_LIMIT or unzipped > UNZIPPED_LIMIT:
            raise BenchError(
                f"the heavy package is {len(data) / 2**20:.1f} MiB zipped, "
                f"{unzipped / 2**20:.1f} MiB unzipped: over Lambda's 50/250 MB"
            )
        cached.write_bytes(data)
        meta = {"handler": digest, "unzipped": unzipped, "stripped": stripped}
        stamp.write_text(json.dumps(meta))
    versions = {}
    for dist in site.glob("*.dist-info"):
        name, _, version = dist.name.removesuffix(".dist-info").partition("-")
        if name.lower() in PACKAGES:
            versions[name.lower()] = version
    unzipped_bytes = meta.get("unzipped", 0)
    return Code(
        heavy_zip=cached.read_bytes(),
        noop_zip=_zip(site, [], HELLO_HANDLER),
        site=site,
        unzipped_mib=(float(unzipped_bytes) if isinstance(unzipped_bytes, int) else 0.0) / 2**20,
        stripped=bool(meta.get("stripped")),
        python=python,
        versions=versions,
    )


# --- functions and versions -----------------------------------------------------------------


def create_version(
    client: LambdaClient,
    name: str,
    code: bytes,
    snap: bool,
    memory_mb: int,
    environment: dict[str, str] | None = None,
) -> tuple[str, float]:
    """Create function `name`, publish a version and wait until it is Active: (version,
    seconds from PublishVersion to Active)."""
    try:
        client.create_function(
            Environment={"Variables": environment or {}},
            FunctionName=name,
            Runtime=RUNTIME,
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": code},
            MemorySize=memory_mb,
            Timeout=30,
            SnapStart={"ApplyOn": "PublishedVersions" if snap else "None"},
        )
        client.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        published = time.perf_counter()
        version = client.publish_version(FunctionName=name)["Version"]
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        while True:
            config = client.get_function_configuration(FunctionName=name, Qualifier=version)
            state = config.get("State")
            if state == "Active":
                took = time.perf_counter() - published
                status = config.get("SnapStart", {}).get("OptimizationStatus")
                log(f"{name}:{version} Active after {took:.2f} s (OptimizationStatus {status})")
                return version, took
            if state == "Failed" or time.monotonic() > deadline:
                raise BenchError(
                    f"{name}:{version} is {state}: {config.get('StateReasonCode')} "
                    f"{config.get('StateReason')}"
                )
            time.sleep(0.1)
    except (BotoCoreError, ClientError) as exc:
        raise BenchError(f"creating {name} failed: {exc}") from exc


# --- latency --------------------------------------------------------------------------------

_INIT = re.compile(r"\tInit Duration: ([\d.]+) ms")
_RESTORE = re.compile(r"\tRestore Duration: ([\d.]+) ms")


@dataclass
class Series:
    label: str
    expect: str  # "init" or "restore": what a cold start of it must show
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # Init or Restore Duration
    problems: list[str] = field(default_factory=list)
    published_s: float = 0.0  # PublishVersion to Active
    phases: dict[str, float] = field(default_factory=dict)  # the server's, mean ms

    def add(self, answer: Answer) -> None:
        if answer.problem is not None:
            self.problems.append(answer.problem)
            return
        report = next((ln for ln in answer.log_tail.splitlines() if ln.startswith("REPORT")), "")
        init, restore = _INIT.search(report), _RESTORE.search(report)
        found = restore if self.expect == "restore" else init
        if found is None:
            seen = "Init Duration" if init else "Restore Duration" if restore else "neither"
            why = "a warm invoke" if seen == "neither" else f"{seen} instead"
            if self.expect == "restore" and init:
                why += " (the template did not survive: an ordinary init ran)"
            self.problems.append(f"{self.label}: not a {self.expect} cold start: {why}")
            return
        self.client_ms.append(answer.took_ms)
        self.server_ms.append(float(found[1]))


def run_series(
    endpoint: str, invoker: Invoker, name: str, series: Series, samples: int, pause: float
) -> None:
    log(f"{series.label}: {samples} cold invokes, {pause:g} s apart")
    before = phases(endpoint, RUNTIME)
    try:
        _run_series(invoker, name, series, samples, pause)
    finally:
        series.phases = phase_means(before, phases(endpoint, RUNTIME))


def _run_series(invoker: Invoker, name: str, series: Series, samples: int, pause: float) -> None:
    with fresh(invoker) as conn:
        for _ in range(samples):
            time.sleep(pause)  # the last environment idles past the idle timeout: reaped
            answer = invoker.call(conn, name, invoker.headers(name))
            series.add(answer)
            if answer.status == 0:  # no answer within the client's 60 s: do not wait on more
                series.problems.append(f"{series.label}: gave up after an unanswered invoke")
                return


def measure_latency(
    tmp: Path, code: Code, args: argparse.Namespace
) -> tuple[list[Series], list[str]]:
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        extra = ["--idle-timeout", f"{args.idle_timeout:g}"]
        server, endpoint = start_lamina(stack, tmp, "namespace", Variant("this", "."), True, extra)
        _, health = get_json(f"{endpoint}/health")
        sandbox = health.get("sandbox", "?") if isinstance(health, dict) else "?"
        notes.append(
            f"server 1: lamina serve --admin-key test:test --sandbox namespace "
            f"--idle-timeout {args.idle_timeout:g} (fresh data dir; /health: sandbox {sandbox})"
        )
        client = lambda_client(endpoint)
        port = int(endpoint.rsplit(":", 1)[1])
        heavy: dict[str, str] = {}  # (the functions' own variables: none)
        plan = [
            ("heavy-plain", code.heavy_zip, False, "heavy, no SnapStart", "init", heavy),
            ("heavy-snap", code.heavy_zip, True, "heavy, SnapStart", "restore", heavy),
            ("noop-snap", code.noop_zip, True, "no-op, SnapStart", "restore", {}),
        ]
        made = []
        for name, zipped, snap, label, expect, env in plan:
            samples = args.samples if snap else args.heavy_samples
            version, took = create_version(client, name, zipped, snap, args.memory, env)
            series = Series(label, expect, published_s=took)
            invoker = Invoker(HOST, port, qualifier=version, log_tail=True)
            invoker.self_check(name)  # the fast signer signs as botocore does
            made.append((name, invoker, series, samples))
        # Before timing: the server checks signatures (an unsigned Invoke is refused).
        unsigned = Invoker(HOST, port, signed=False)
        with fresh(unsigned) as conn:
            refused = unsigned.call(conn, "noop-snap").status
        notes.append(f"auth: an unsigned Invoke was answered {refused} (must be 403)")
        if refused != 403:
            made[0][2].problems.append(f"an unsigned Invoke was answered {refused}, not 403")
        for name, invoker, series, samples in made:
            run_series(endpoint, invoker, name, series, samples, args.pause)
        if server.proc.poll() is not None:
            made[0][2].problems.append(f"the server exited ({server.proc.returncode})")
    return [series for _, _, series, _ in made], notes


# --- memory ---------------------------------------------------------------------------------


def rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup's kB fields ({} if the process is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                found[parts[0].rstrip(":")] = int(parts[1])
    return found


def uss(fields: dict[str, int]) -> int:
    return fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def summed(rollups: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for fields in rollups:
        for key, value in fields.items():
            total[key] = total.get(key, 0) + value
    return total


def pid_one(pid: int) -> bool:
    """Whether `pid` is PID 1 of its innermost PID namespace (a sandbox's init)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    return False


def env_processes(pid: int) -> tuple[list[int], list[int], str]:
    """(the sandbox's init, the runtime and whatever runs below it, how the listed pid was
    read) of the environment listed with `pid`. The sandbox contract says the listed pid is
    the runtime's; a restored namespace environment lists its PID 1 (the sandbox's init, a
    copy of the template whose child is the runtime): both readings are handled, the init
    being the PID 1 of the environment's PID namespace."""
    tree = [p for p, _ in process_tree(pid)]
    if pid_one(pid):
        return [pid], tree[1:], f"the listed Pid is the sandbox's init ({comm(pid)}, PID 1)"
    parent = parent_of(pid)
    if pid_one(parent):
        return (
            [parent],
            tree,
            f"the listed Pid is the runtime; its parent the init ({comm(parent)})",
        )
    return [], tree, f"the listed Pid is the runtime; its parent ({comm(parent)}) is not counted"


def parent_of(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def cgroup_memory(pid: int) -> tuple[str, int | None]:
    """(which file, bytes) of the memory cgroup `pid` is in."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                file = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
            elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                file = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current"
            else:
                continue
            with contextlib.suppress(OSError, ValueError):
                return file.name, int(file.read_text())
    return "memory cgroup", None


@dataclass
class EnvMemory:
    env_id: str
    runtime: dict[str, int]
    init: dict[str, int]
    how: str  # which process the listed Pid was
    cgroup_file: str
    cgroup_bytes: int | None

    @property
    def uss_kib(self) -> int:
        return uss(self.runtime) + uss(self.init)


@dataclass
class Memory:
    envs: list[EnvMemory] = field(default_factory=list)
    own_writes: dict[str, int] = field(default_factory=dict)  # the forked child's rollup
    template_parent: dict[str, int] = field(default_factory=dict)  # its parent's
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def own_writes(code: Code, environment: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """(child, parent) smaps_rollup of OWN_WRITES_SCRIPT run on the unpacked heavy code, with
    the heavy function's environment variables."""
    with tempfile.TemporaryDirectory(prefix="lamina-snap-code-") as task:
        with zipfile.ZipFile(io.BytesIO(code.heavy_zip)) as archive:
            archive.extractall(task)
        argv = [code.python, "-B", "-S", "-c", OWN_WRITES_SCRIPT, task]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, **environment},
        )
    try:
        out = json.loads(done.stdout)
        return dict(out["child"]), dict(out["parent"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"own-writes floor failed ({done.returncode}): {done.stderr}") from exc


def measure_memory(tmp: Path, code: Code, args: argparse.Namespace) -> Memory:
    memory = Memory()
    memory.own_writes, memory.template_parent = own_writes(code, {})
    with contextlib.ExitStack() as stack:
        server, endpoint = start_lamina(stack, tmp, "namespace", Variant("this", "."), True)
        memory.notes.append(
            "server 2: lamina serve --admin-key test:test --sandbox namespace (default idle "
            "timeout; fresh data dir)"
        )
        client = lambda_client(endpoint)
        name = "heavy-snap"
        env: dict[str, str] = {}
        version, _ = create_version(client, name, code.heavy_zip, True, args.memory, env)
        port = int(endpoint.rsplit(":", 1)[1])
        invoker = Invoker(HOST, port, qualifier=version, log_tail=True)
        series = Series("memory", "restore")
        lock = threading.Lock()
        body = json.dumps({"sleep": 1}).encode()

        def one() -> None:
            with fresh(invoker) as conn:
                answer = invoker.call(conn, name, invoker.headers(name, body), body)
            with lock:
                series.add(answer)

        log(f"memory: {args.environments} concurrent invokes of {name}:{version}, 1 s each")
        threads = [threading.Thread(target=one) for _ in range(args.environments)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        memory.problems += series.problems
        time.sleep(args.settle)
        status, listing = get_json(f"{endpoint}/lamina/environments", signed=True)
        envs = listing.get("Environments", []) if isinstance(listing, dict) else []
        mine = [e for e in envs if e.get("FunctionName") == name and e.get("Pid")]
        idle = [e for e in mine if e.get("State") == "idle"]
        memory.notes.append(
            f"environments of {name}:{version}: {len(mine)} listed ({len(idle)} idle; "
            f"/lamina/environments {status})"
        )
        for env in idle:
            inits, runtimes, how = env_processes(int(env["Pid"]))
            cg_file, cg_bytes = cgroup_memory(runtimes[0] if runtimes else int(env["Pid"]))
            memory.envs.append(
                EnvMemory(
                    str(env.get("Id")),
                    summed(rollup(p) for p in runtimes),
                    summed(rollup(p) for p in inits),
                    how,
                    cg_file,
                    cg_bytes,
                )
            )
        if len(memory.envs) != args.environments:
            memory.problems.append(
                f"{len(memory.envs)} idle environments measured, {args.environments} wanted"
            )
        if server.proc.poll() is not None:
            memory.problems.append(f"the server exited ({server.proc.returncode})")
    return memory


# --- report ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _mib(kib: int | float) -> str:
    return f"{kib / 1024:.1f}"


def _row(cells: Sequence[str]) -> str:
    widths = (22, 4, 8, 8, 8, 7, 10, 10, 9)
    first = f"{cells[0]:<{widths[0]}}"
    return first + "".join(f"{c:>{w + 1}}" for c, w in zip(cells[1:], widths[1:], strict=True))


def latency_lines(series: Sequence[Series], floors: Floors) -> list[str]:
    fork = floors.fork.p50
    lines = [
        _row(
            ["cold start", "n", "p50 ms", "p90 ms", "max ms", "xfork", "server", "srv p50", "p90"]
        ),
    ]
    for s in series:
        if not s.client_ms:
            lines.append(f"{s.label:<23}no cold start measured")
            continue
        p50 = statistics.median(s.client_ms)
        cells = [s.label, str(len(s.client_ms)), f"{p50:.2f}"]
        cells += [f"{percentile(s.client_ms, 0.9):.2f}", f"{max(s.client_ms):.2f}"]
        cells += [f"{p50 / fork:.1f}x", s.expect.capitalize()]
        srv = statistics.median(s.server_ms)
        cells += [f"{srv:.2f}", f"{percentile(s.server_ms, 0.9):.2f}"]
        lines.append(_row(cells))
    f = floors.fork
    lines.append(
        _row(["fork floor", str(f.count), f"{f.p50:.2f}", "-", f"{f.high:.2f}", "1.0x"] + ["-"] * 3)
    )
    lines.append(
        "  (server: the REPORT line's Init Duration or Restore Duration; srv p50 / fork p50: "
        + ", ".join(
            f"{s.label} {statistics.median(s.server_ms) / fork:.1f}x" for s in series if s.server_ms
        )
        + ")"
    )
    lines.append(
        "  the server's cold-start phases (lamina_cold_start_phase_seconds, mean ms; sandbox / "
        "start / init): "
        + "; ".join(
            f"{s.label} "
            + " / ".join(f"{s.phases[p]:.2f}" if p in s.phases else "-" for p in PHASES)
            for s in series
        )
    )
    lines.append(
        "  PublishVersion to Active: "
        + ", ".join(f"{s.label} {s.published_s:.2f} s" for s in series)
    )
    return lines


def memory_lines(memory: Memory) -> list[str]:
    own = uss(memory.own_writes)
    lines = [
        "memory of restored idle environments (KiB from /proc/PID/smaps_rollup, as MiB):",
        f"  {'environment':<24}{'rt Pss':>8}{'rt USS':>8}{'init Pss':>9}{'init USS':>9}"
        f"{'USS sum':>9}{'- own':>7}{'cgroup':>8}",
    ]
    for env in memory.envs:
        cg = "-" if env.cgroup_bytes is None else f"{env.cgroup_bytes / 2**20:.1f}"
        lines.append(
            f"  {env.env_id[:24]:<24}{_mib(env.runtime.get('Pss', 0)):>8}"
            f"{_mib(uss(env.runtime)):>8}{_mib(env.init.get('Pss', 0)):>9}"
            f"{_mib(uss(env.init)):>9}{_mib(env.uss_kib):>9}{_mib(env.uss_kib - own):>7}{cg:>8}"
        )
    if memory.envs:
        env = memory.envs[0]
        lines.append(f"  ({env.how}; cgroup: the environment's {env.cgroup_file}, MiB)")
    lines.append(
        f"  own writes (compared to): a fork of the initialised function (runtime interpreter "
        f"-B -S, app.py imported) after one handler call: USS {_mib(own)} MiB "
        f"(Private_Dirty {_mib(memory.own_writes.get('Private_Dirty', 0))}), Pss "
        f"{_mib(memory.own_writes.get('Pss', 0))}; its parent (the initialised state, as a "
        f"template holds it): RSS {_mib(memory.template_parent.get('Rss', 0))} MiB"
    )
    return lines


def target_lines(series: Sequence[Series], memory: Memory | None) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    by_label = {s.label: s for s in series}
    lines = ["targets (issue 26):"]
    snap, plain = by_label.get("heavy, SnapStart"), by_label.get("heavy, no SnapStart")
    if snap is not None and snap.client_ms:
        p50 = statistics.median(snap.client_ms)
        against = (
            f" (without SnapStart: {statistics.median(plain.client_ms):.0f} ms, "
            f"{statistics.median(plain.client_ms) / p50:.0f}x)"
            if plain is not None and plain.client_ms
            else ""
        )
        lines.append(
            f"  heavy cold start p50 with SnapStart <= {TARGET_SNAP_P50_MS:g} ms: {p50:.2f} ms "
            f"{verdict(p50 <= TARGET_SNAP_P50_MS)}{against}"
        )
    elif snap is not None:
        lines.append(
            f"  heavy cold start p50 with SnapStart <= {TARGET_SNAP_P50_MS:g} ms: not measured "
            "MISSED"
        )
    if memory is not None and memory.envs:
        own = uss(memory.own_writes)
        worst = max(env.uss_kib for env in memory.envs) - own
        lines.append(
            f"  restored idle environment USS <= own writes + {TARGET_EXTRA_MIB:g} MiB (worst of "
            f"{len(memory.envs)}): {_mib(worst + own)} MiB = {_mib(own)} + {_mib(worst)} MiB "
            f"{verdict(worst <= TARGET_EXTRA_MIB * 1024)}"
        )
    elif memory is not None:
        lines.append(
            f"  restored idle environment USS <= own writes + {TARGET_EXTRA_MIB:g} MiB: "
            "not measured MISSED"
        )
    return lines


def report(
    code: Code,
    floors: Floors,
    series: Sequence[Series],
    notes: Sequence[str],
    memory: Memory | None,
    args: argparse.Namespace,
) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in sorted(code.versions.items()))
    lines = [
        f"SnapStart cold starts, {RUNTIME} ({code.python}), MemorySize {args.memory} MB, "
        f"loopback, {os.cpu_count()} CPUs, raw HTTP Invokes SigV4-signed per request, "
        f"LogType=Tail",
        f"  heavy code: {packages}; {len(code.heavy_zip) / 2**20:.1f} MiB zipped, "
        f"{code.unzipped_mib:.1f} MiB unzipped"
        + (" (tests/ and __pycache__/ stripped)" if code.stripped else "")
        + f"; cached in {code.site}",
        *(f"  {note}" for note in notes),
        f"  every invoke cold: idle timeout {args.idle_timeout:g} s, {args.pause:g} s between "
        "invokes; each REPORT checked for Init/Restore Duration",
        "",
        *latency_lines(series, floors),
        "",
        *floor_lines(floors),
    ]
    if memory is not None:
        lines += ["", *(f"{note}" for note in memory.notes), *memory_lines(memory)]
    lines += ["", *target_lines(series, memory)]
    problems = [p for s in series for p in s.problems]
    problems += memory.problems if memory is not None else []
    if problems:
        lines += ["", "problems (INVALID):", *(f"  {p}" for p in problems[:20])]
        if len(problems) > 20:
            lines.append(f"  ... and {len(problems) - 20} more")
    return lines


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--samples", type=int, default=30, help="cold invokes of each SnapStart function")
    add("--heavy-samples", type=int, default=10, help="cold invokes without SnapStart (~1.5 s)")
    add("--pause", type=float, default=0.3, help="s between invokes (> the idle timeout)")
    add("--idle-timeout", type=float, default=0.1, help="the latency server's --idle-timeout")
    add("--memory", type=int, default=1769, help="MemorySize of every function")
    add("--environments", type=int, default=5, help="restored environments measured")
    add("--settle", type=float, default=1.0, help="s after they answered, before measuring")
    add("--skip-memory", action="store_true", help="latency only")
    add("--skip-latency", action="store_true", help="memory only")
    add("--strip", action="store_true", help="zip the packages without tests/ and __pycache__/")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (the namespace sandbox)", file=sys.stderr)
        return 2

    def work() -> list[str]:
        code = build_code(args.strip)
        floors = measure_floors()
        with (
            tempfile.TemporaryDirectory(
                prefix="lamina-snapstart-", ignore_cleanup_errors=True
            ) as tmp,
            unbroken_cleanup(),
        ):
            series, notes = (
                ([], []) if args.skip_latency else measure_latency(Path(tmp), code, args)
            )
            memory = None if args.skip_memory else measure_memory(Path(tmp), code, args)
        lines = report(code, floors, series, notes, memory, args)
        invalid = any(s.problems for s in series) or (memory is not None and memory.problems)
        return [*lines, "INVALID" if invalid else "valid"]

    lines = guarded(work)
    print("\n".join(lines), flush=True)
    return 1 if lines[-1] == "INVALID" else 0


if __name__ == "__main__":
    sys.exit(main())
