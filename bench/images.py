"""Benchmark container-image functions: pulling and unpacking an image, and cold starts of an
image function beside the same code as zips, with floors measured in the same run.

Run: ``.venv/bin/python bench/images.py [--rounds 3] [--functions 15]`` (or
``make bench-images ARGS="..."``). Needs Debian's docker-registry and skopeo (as the tests).

What it measures
----------------
The image: the tests' Python base (`tests/integration/_images.py`: the host's CPython with
its libraries and AWS's `awslambdaric` from PyPI, ENTRYPOINT ``python3 -m awslambdaric``)
plus a layer with ``app.py``, gzip-compressed as registries carry it, pushed with skopeo to a
``docker-registry`` of the bench's own on 127.0.0.1. About 90 MB unpacked.

* pull: ``--rounds`` times, Lamina's `ImageStore` (the code the server runs) resolves the
  image and ensures it into an empty store: manifest, config, every layer fetched and
  digest-checked, unpacked into the read-only root. Floor: ``skopeo copy docker://... dir:``
  of the same image into an empty directory (fetch and verify, no unpack), alternated with
  Lamina's rounds. Each round writes into a directory of its own, all removed at the end
  (removing 90 MB of files between rounds makes ext4 slower to create the next round's
  files: the first pull of a node does not follow such a removal). Then "cached": a new
  store on the last round's directory resolves and ensures the image again (the manifest is
  read from the registry; nothing else is fetched or unpacked).
* cold start: one ``lamina serve`` at the defaults a user gets (authentication on, the
  default sandbox: namespace), fresh data dir. ``--functions`` never-invoked functions of each
  kind, invoked once each, interleaved, ``--pace`` ms apart, boto3 ``invoke`` timed from
  request to full response, plus the ``Init Duration`` of each REPORT line (LogType Tail):
  - image: PackageType Image, the image above;
  - zip (same client): ``provided.al2023`` with a bootstrap that execs the host's
    ``/usr/bin/python3 -m awslambdaric app.handler``, awslambdaric in the zip: the same code
    started the same way, so the difference is what an image costs;
  - zip (managed python3.11): the same handler on Lamina's managed runtime, whose
    environments come from a warm Python zygote (context: what AWS's client costs).

Percentiles are nearest-rank. Exit status 0 when every measurement was taken and every
invoke answered its expected body, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from harness import (
    HOST,
    BenchError,
    free_port,
    guarded,
    http_ok,
    lambda_client,
    log,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from signing import admin_key_args

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from tests._oci import Registry, missing_tools, push, write_layout
from tests.integration._images import python_base, ric_site

from lamina.images.reference import Registries
from lamina.images.store import ImageStore

HANDLER = 'def handler(event, context):\n    return {"ok": True, "n": event.get("n")}\n'
ROLE = "arn:aws:iam::000000000000:role/bench"
_SKOPEO_COPY = ("skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false")
BOOTSTRAP = "#!/bin/sh\nexec /usr/bin/python3 -m awslambdaric app.handler\n"


@dataclass
class Results:
    size_mb: float = 0.0
    floor_s: list[float] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    cached_s: list[float] = field(default_factory=list)
    #: kind -> (client ms, Init Duration ms) per cold start
    cold: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    failure: str | None = None


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def build_image(tmp: Path, registry: Registry) -> str:
    base = python_base()
    code = _tar_app()
    layout = tmp / "layout"
    write_layout(
        layout,
        [*base.layers, code],
        entrypoint=base.entrypoint,
        cmd=["app.handler"],
        env=list(base.env),
        working_dir="/var/task",
        compress=True,
    )
    push(layout, registry, "bench/app", "v1")
    return f"{registry.host}/bench/app:v1"


def _tar_app() -> bytes:
    from tests._oci import tar_of_files

    return tar_of_files({"var/task/app.py": HANDLER}, mode=0o644)


def measure_pull(tmp: Path, uri: str, registry: Registry, rounds: int, res: Results) -> None:
    source = f"docker://{uri}"
    for i in range(rounds):
        target = tmp / f"skopeo-{i}"
        start = time.perf_counter()
        subprocess.run(
            [*_SKOPEO_COPY, source, f"dir:{target}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        res.floor_s.append(time.perf_counter() - start)
        res.size_mb = sum(p.stat().st_size for p in target.iterdir()) / 1e6
        root = tmp / f"store-{i}"
        res.pull_s.append(asyncio.run(_pull(root, uri)))
    last = tmp / f"store-{rounds - 1}"
    for _ in range(rounds):
        res.cached_s.append(asyncio.run(_pull(last, uri)))


async def _pull(root: Path, uri: str) -> float:
    store = ImageStore(root, Registries())
    try:
        start = time.perf_counter()
        resolved = await store.resolve(uri, "x86_64")
        await store.ensure(resolved)
        return time.perf_counter() - start
    finally:
        await store.close()


def _zip(files: dict[str, str | bytes], tree: Path | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(tree.rglob("*")) if tree is not None else []:
            assert tree is not None
            if path.is_file() and path.name != ".installed":
                archive.write(path, path.relative_to(tree).as_posix())
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name == "bootstrap" else 0o644) << 16
            archive.writestr(info, content)
    return buf.getvalue()


def measure_cold(tmp: Path, uri: str, args: argparse.Namespace, res: Results) -> None:
    with contextlib.ExitStack() as stack:
        data_dir = tmp / "lamina-data"
        data_dir.mkdir()
        port = free_port()
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
        server = start_server("lamina", argv, tmp, tmp / "lamina.log")
        stack.callback(stop_server, server)
        endpoint = f"http://{HOST}:{port}"
        wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
        lam = lambda_client(endpoint)
        kinds: dict[str, dict[str, Any]] = {
            "image": {"PackageType": "Image", "Code": {"ImageUri": uri}},
            "zip (same client)": {
                "Runtime": "provided.al2023",
                "Handler": "app.handler",
                "Code": {"ZipFile": _zip({"app.py": HANDLER, "bootstrap": BOOTSTRAP}, ric_site())},
            },
            "zip (managed python3.11)": {
                "Runtime": "python3.11",
                "Handler": "app.handler",
                "Code": {"ZipFile": _zip({"app.py": HANDLER})},
            },
        }
        names: dict[str, list[str]] = {}
        try:
            start = time.perf_counter()
            for i, (kind, spec) in enumerate(kinds.items()):
                names[kind] = [f"cold-{i}-{n}" for n in range(args.functions)]
                for name in names[kind]:
                    lam.create_function(FunctionName=name, Role=ROLE, MemorySize=512, **spec)
            waiter = lam.get_waiter("function_active_v2")
            for group in names.values():
                for name in group:
                    waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            log(
                f"{sum(map(len, names.values()))} functions Active in "
                f"{time.perf_counter() - start:.1f} s"
            )
            time.sleep(args.settle)
            for n in range(args.functions):
                for kind, group in names.items():
                    sample = _invoke(lam, group[n], n)
                    res.cold.setdefault(kind, []).append(sample)
                    time.sleep(args.pace / 1000)
        except (BotoCoreError, ClientError, WaiterError) as exc:
            raise BenchError(f"the cold-start run failed: {exc}") from exc


def _invoke(lam: object, name: str, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    resp = lam.invoke(  # type: ignore[attr-defined]
        FunctionName=name, Payload=json.dumps({"n": n}), LogType="Tail"
    )
    body = resp["Payload"].read()
    elapsed = (time.perf_counter() - start) * 1000
    if json.loads(body) != {"ok": True, "n": n} or resp.get("FunctionError"):
        raise BenchError(f"{name} answered {body[:200]!r}")
    tail = base64.b64decode(resp.get("LogResult", "")).decode(errors="replace")
    m = re.search(r"Init Duration: ([\d.]+) ms", tail)
    return elapsed, float(m.group(1)) if m else float("nan")


def report(res: Results) -> None:
    print("\n== Container images (defaults: auth on, namespace sandbox) ==")
    if res.floor_s and res.pull_s:
        floor = statistics.median(res.floor_s)
        pull = statistics.median(res.pull_s)
        print(f"image: {res.size_mb:.1f} MB compressed (as pushed)")
        print(f"floor  skopeo copy docker:// -> dir:   median {floor * 1000:8.0f} ms")
        print(
            f"lamina pull + verify + unpack          median {pull * 1000:8.0f} ms"
            f"   {pull / floor:5.2f}x floor (target <= 1.5x)"
        )
        if res.cached_s:
            cached = statistics.median(res.cached_s)
            print(f"lamina cached (manifest read only)     median {cached * 1000:8.1f} ms")
    if res.cold:
        print("\ncold start, first invoke of a never-invoked function (boto3, ms):")
        print(f"{'kind':28} {'n':>3} {'p50':>8} {'p90':>8} {'init p50':>9}")
        for kind, samples in res.cold.items():
            client = [c for c, _ in samples]
            init = [i for _, i in samples if i == i]
            print(
                f"{kind:28} {len(samples):3d} {pct(client, 50):8.1f} {pct(client, 90):8.1f}"
                f" {pct(init, 50) if init else float('nan'):9.1f}"
            )
        image = res.cold.get("image")
        same = res.cold.get("zip (same client)")
        if image and same:
            gap = pct([c for c, _ in image], 50) - pct([c for c, _ in same], 50)
            print(f"image - zip (same client), p50: {gap:+.1f} ms (target <= 2 ms)")
    if res.failure:
        print(f"\nINVALID: {res.failure}")


def run(tmp: Path, args: argparse.Namespace, res: Results) -> None:
    missing = missing_tools()
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (apt-get install them)")
    with Registry() as registry:
        log("building and pushing the image")
        uri = build_image(tmp, registry)
        log("pull rounds")
        measure_pull(tmp, uri, registry, args.rounds, res)
        log("cold starts")
        measure_cold(tmp, uri, args, res)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="pull rounds (and skopeo's)")
    parser.add_argument("--functions", type=int, default=15, help="cold starts of each kind")
    parser.add_argument("--pace", type=float, default=100.0, help="ms between invokes")
    parser.add_argument("--settle", type=float, default=3.0, help="s before the cold starts")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = Results()

    def work() -> None:
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-images-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            try:
                run(Path(tmp), args, res)
            except BenchError as exc:
                res.failure = str(exc)

    guarded(work)
    report(res)
    return 1 if res.failure else 0


if __name__ == "__main__":
    sys.exit(main())
