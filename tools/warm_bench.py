"""A quick, signed warm-invoke benchmark of Lamina servers side by side, for work on the hot
path: before/after figures of one change, taken in one run.

Run: ``.venv/bin/python tools/warm_bench.py [--duration 5] [--rounds 3]
[--variant before=/path/to/old/src] [--sandbox namespace] [--memory 1024]``

Each variant is one ``lamina serve`` at its defaults (authentication on, with an admin key; the
sandbox given) running the ``lamina`` package found in that source directory (``.`` for this
checkout's), with a no-op python3.11 function of ``--memory`` MB. wrk replays one SigV4-signed
Invoke request (signed again before every wrk run: a signature is good for 5 minutes). The
variants' runs alternate, round by round (a c1 run, then a c16 run, per variant), so a busy
machine weighs on all of them alike; compare them within one run only. Per run it prints c1
p50/p99, c16 req/s, and the server process's CPU per invoke over the c16 run (user+system time
from /proc, all its threads, and the event loop's thread alone; the sandboxes are not counted),
then each variant's medians.

With ``--profile FILE`` (raw collapsed stacks if it ends in ``.txt``, else a flame graph),
py-spy records the first variant's server over one more c16 run (``pip install py-spy``).

Not a replacement for ``make bench`` (floor and peer beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import harness as bench  # bench/harness.py: wrk, servers, processes

AKID, SECRET = "AKIDWARMBENCH0000000", "warm-bench-secret"
FUNCTION_NAME = "bench-noop"
NOOP_HANDLER = "def handler(event, context):\n    return None\n"


@dataclass
class Variant:
    name: str
    src: str
    #: more `lamina serve` arguments, after a space in `--variant` (NAME=SRC ARGS...)
    extra: tuple[str, ...] = ()
    url: str = ""
    pid: int = 0
    lua: Path = Path()
    rows: list[tuple[float, float, float, float, float]] = field(default_factory=list)


def _variant(spec: str) -> Variant:
    name, _, rest = spec.partition("=")
    src, *extra = rest.split()
    return Variant(name, src, tuple(extra))


def signed_lua(url: str, path: Path) -> None:
    """A wrk script replaying one signed Invoke of `url` with body `{}`."""
    request = AWSRequest(
        method="POST", url=url, data=b"{}", headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(AKID, SECRET), "lambda", "us-east-1").add_auth(request)
    lines = ['wrk.method = "POST"', 'wrk.body = "{}"']
    for name, value in request.headers.items():
        if name.lower() != "host":  # wrk sends the URL's own, which is what was signed
            lines.append(f'wrk.headers["{name}"] = "{value}"')
    path.write_text("\n".join(lines) + "\n")


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User+system seconds of a process (all its threads), or of one of its threads."""
    where = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(where).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(stack: contextlib.ExitStack, variant: Variant, args: argparse.Namespace) -> None:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warm-bench-")))
    data = tmp / "data"
    data.mkdir()
    port = bench.free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", bench.HOST, "--port", str(port)]
    argv += ["--data-dir", str(data), "--log-level", "warning", "--sandbox", args.sandbox]
    argv += ["--admin-key", f"{AKID}:{SECRET}"] if args.auth == "on" else ["--auth", "off"]
    env = dict(os.environ)
    argv += list(variant.extra)
    if variant.src != ".":
        env["PYTHONPATH"] = os.path.abspath(variant.src)
    server = bench.start_server(variant.name, argv, tmp, tmp / "lamina.log", env)
    stack.callback(bench.stop_server, server)
    endpoint = f"http://{bench.HOST}:{port}"
    bench.wait_ready(server, lambda: bench.http_ok(f"{endpoint}/health", expect_json_ok=True))
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
    )
    client.create_function(
        FunctionName=FUNCTION_NAME,
        Runtime="python3.11",
        Role="arn:aws:iam::000000000000:role/bench",
        Handler="app.handler",
        MemorySize=args.memory,
        Code={"ZipFile": bench.handler_zip(NOOP_HANDLER)},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=FUNCTION_NAME)
    client.invoke(FunctionName=FUNCTION_NAME, Payload=b"{}")
    client.close()
    variant.url = f"{endpoint}/2015-03-31/functions/{FUNCTION_NAME}/invocations"
    variant.pid = server.proc.pid
    variant.lua = tmp / "signed.lua"
    signed_lua(variant.url, variant.lua)
    bench.run_wrk(variant.url, 16, 2, variant.lua)  # 16 environments: no cold start measured


def measure(variant: Variant, seconds: int, hook: str | None = None) -> None:
    signed_lua(variant.url, variant.lua)
    c1 = bench.run_wrk(variant.url, 1, seconds, variant.lua)
    signed_lua(variant.url, variant.lua)
    pid = variant.pid
    before, main_before = cpu_s(pid), cpu_s(pid, pid)
    tree_before = bench.tree_cpu(pid)
    if hook:  # e.g. strace -c -p {pid}: started as the c16 run starts
        subprocess.Popen(hook.format(pid=pid), shell=True)
    c16 = bench.run_wrk(variant.url, 16, seconds, variant.lua)
    used, main = cpu_s(pid) - before, cpu_s(pid, pid) - main_before
    tree_after = bench.tree_cpu(pid)
    per, main_per = used / max(c16.requests, 1) * 1e6, main / max(c16.requests, 1) * 1e6
    split = _split(pid, tree_before, tree_after, c16.requests)
    variant.rows.append((c1.p50_ms, c1.p99_ms, c16.rps, per, main_per))
    problems = c1.problems() + c16.problems()
    print(
        f"{variant.name:>10}: c1 p50 {c1.p50_ms:.3f} ms p99 {c1.p99_ms:.3f} ms | "
        f"c16 {c16.rps:,.0f}/s | server CPU {per:.0f} us/invoke ({main_per:.0f} on the "
        f"event loop's thread); tree: {split}" + (f" | INVALID: {problems}" if problems else ""),
        flush=True,
    )


def _split(
    root: int,
    before: dict[tuple[int, int], int],
    after: dict[tuple[int, int], int],
    requests: int,
) -> str:
    """CPU µs per invoke of the server's front workers and of everything else below it (the
    environments, the zygotes), from two `tree_cpu` snapshots."""
    workers = others = 0
    for key, ticks in after.items():
        if key[0] == root:
            continue
        used = ticks - before.get(key, 0)
        try:
            cmdline = Path(f"/proc/{key[0]}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"lamina.front.worker" in cmdline:
            workers += used
        else:
            others += used
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / max(requests, 1)
    return f"workers {workers * tick_us:.0f} us, environments {others * tick_us:.0f} us"


def profile(variant: Variant, seconds: int, out: str) -> None:
    signed_lua(variant.url, variant.lua)
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "-o", out, "--pid"]
    argv += [str(variant.pid), "--duration", str(seconds), "--nonblocking", "-r", "250"]
    argv += ["--format", "raw" if out.endswith(".txt") else "flamegraph"]
    spy = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    bench.run_wrk(variant.url, 16, seconds, variant.lua)
    spy.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=SRC [ARGS]: a server running the lamina package under SRC (default: this "
        "one), with more `lamina serve` arguments if given (e.g. 'w0=. --workers 0')",
    )
    parser.add_argument("--sandbox", default="namespace")
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--auth", default="on", choices=("on", "off"))
    parser.add_argument("--profile", help="py-spy output of one more c16 run (first variant)")
    parser.add_argument("--hook", help="a shell command run as each c16 run starts ({pid})")
    args = parser.parse_args()
    variants = [_variant(v) for v in args.variant] or [Variant("this", ".")]
    with contextlib.ExitStack() as stack:
        for variant in variants:
            start(stack, variant, args)
        for _ in range(args.rounds):
            for variant in variants:
                measure(variant, args.duration, args.hook)
        if args.profile:
            profile(variants[0], args.duration, args.profile)
    print("medians:")
    for v in variants:
        cols = list(zip(*v.rows, strict=True))
        med = [statistics.median(c) for c in cols]
        print(
            f"{v.name:>10}: c1 p50 {med[0]:.3f} ms p99 {med[1]:.3f} ms | c16 {med[2]:,.0f}/s | "
            f"server CPU {med[3]:.0f} us/invoke ({med[4]:.0f} event loop)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
