"""A small data disk flooded by function logs (issue 15, items 2 and 3).

The data directory lives on a 64 MB tmpfs mounted for this module (root only). Three
invocations print 20 MB each; the control plane and async acceptance must keep working, the
log store must stay out of the reserve it leaves free (16 MB by default on 64 MB), every lost
line must be said by a marker in its stream and counted by the metric, and the store must give
space back by itself when another writer fills the disk; after a restart with a smaller cap
on a completely full disk, it must prune itself back under that cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Functions, Server, wait_for, wait_seen

MB = 1024 * 1024
DISK_MB = 64
#: the default reserve on a 64 MB filesystem: a quarter of it (see log_disk.default_reserve)
RESERVE = DISK_MB * MB // 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

#: 20 MB of 1 KB lines, in 256 KB writes spaced so that the store keeps up and the disk,
#: not the buffers, is what fills
FLOOD = """
import sys, time
def handler(event, context):
    line = "y" * 1023 + chr(10)
    for _ in range(80):
        sys.stdout.write(line * 256)
        sys.stdout.flush()
        time.sleep(0.03)
    return "done"
"""
FLOOD_BYTES = 80 * 256 * 1024

RECORDER = """
import json
def handler(event, context):
    print("SEEN " + json.dumps({"rid": context.aws_request_id, "t": 0, "event": event}))
    return "ok"
"""

MARKER = re.compile(r"\[lamina: (\d+) log lines \((\d+) bytes\) dropped: [^\]]+\]")


@pytest.fixture(scope="module")
def disk() -> Iterator[Path]:
    """A 64 MB tmpfs of the module's own, unmounted after."""
    base = Path(tempfile.mkdtemp(prefix="lamina-logdisk-", dir="/var/tmp"))
    mount = base / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def log_files_bytes(data: Path) -> int:
    return sum(
        p.stat().st_size
        for p in data.glob("logs.db*")
        if p.name != "logs.db-shm"  # shared memory index, not data
    )


def metric_total(server: Server, name: str, reason: str | None = None) -> float:
    text = httpx.get(server.endpoint + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and (reason is None or f'reason="{reason}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start(data: Path, *args: str) -> Server:
    # The server's own output goes beside its data directory: off the small disk, by a link.
    run = data.parent.parent / "run"
    run.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (run / "data").symlink_to(data)
    server = Server(data_dir=run / "data", extra_args=args)
    try:
        server.start(timeout=60)
    except RuntimeError as e:
        raise RuntimeError(f"{e}:\n{server.log()}") from e
    return server


def fill(disk: Path, name: str) -> Path:
    """Take every free byte of the disk with a file (another writer on the same disk)."""
    filler = disk / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (MB, 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def invocation_window(server: Server, group: str, rid: str) -> list[str] | None:
    """The messages between an invocation's START and END, once its END is stored."""
    messages = [m for _, m in server.log_events(group)]
    if f"END RequestId: {rid}" not in messages:
        return None
    start_at = messages.index(f"START RequestId: {rid} Version: $LATEST")
    return messages[start_at + 1 : messages.index(f"END RequestId: {rid}")]


def flood(server: Server, functions: Functions, times: int = 3) -> tuple[str, list[str]]:
    """Run the flood `times`; its log group and the request ids."""
    lam = functions.client
    name = functions.create(FLOOD, Timeout=60, MemorySize=256)["FunctionName"]
    rids = []
    for _ in range(times):
        resp = lam.invoke(FunctionName=name)
        assert resp["Payload"].read() == b'"done"'
        rids.append(resp["ResponseMetadata"]["RequestId"])
    return f"/aws/lambda/{name}", rids


def control_plane_works(server: Server, functions: Functions, events: int) -> None:
    """CreateFunction succeeds and an async invoke is accepted (202) and runs."""
    lam = functions.client
    name = f"rec-{uuid.uuid4().hex[:8]}"
    wait_for(lambda: _try_create(functions, name), 30, "CreateFunction to succeed")
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n":1}')
    assert accepted["StatusCode"] == 202
    assert wait_seen(server, name, 1, timeout=30)[0]["event"] == {"n": 1}


def test_a_rate_limited_flood_is_marked_counted_and_pruned_under_the_cap(disk: Path) -> None:
    """Default limits (1 MB/s per function, 8 MB burst) and a 24 MB cap."""
    data = disk / "data"
    server = start(data, "--log-disk-cap", "24")
    try:
        functions = Functions(server.client())
        group, rids = flood(server, functions)
        control_plane_works(server, functions, 1)
        # Every lost line is said in its stream: the last invocation's lines are stored or
        # counted by a marker, to the byte.
        window = wait_for(lambda: invocation_window(server, group, rids[-1]), 30, "the lines")
        kept = [m for m in window if m.startswith("y")]
        markers = [MARKER.fullmatch(m) for m in window if m.startswith("[lamina:")]
        assert markers and all(markers), window[-3:]
        assert all("log rate limit" in m[0] for m in markers if m)
        lost_bytes = sum(int(m[2]) for m in markers if m)
        lost_lines = sum(int(m[1]) for m in markers if m)
        assert len(kept) * 1024 + lost_bytes == FLOOD_BYTES
        assert len(kept) + lost_lines == FLOOD_BYTES // 1024
        # ... and counted by the metric (at least what the markers still stored say: the
        # oldest may have been pruned with the oldest lines).
        dropped = metric_total(server, "lamina_log_dropped_bytes_total", "rate_limit")
        assert dropped >= lost_bytes > 0
        assert metric_total(server, "lamina_log_dropped_lines_total", "rate_limit") >= lost_lines
        # The store pruned itself back under its cap, without a restart.
        assert wait_for(lambda: log_files_bytes(data) <= 24 * MB, 90, "the logs under the cap")
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def test_an_unlimited_flood_leaves_the_reserve_and_the_control_plane(disk: Path) -> None:
    """No rate limit: the disk itself is what the flood runs into (the issue's case)."""
    data = disk / "data"
    server = start(data, "--log-rate-limit", "0")
    try:
        functions = Functions(server.client())
        group, rids = flood(server, functions)
        wait_for(lambda: invocation_window(server, group, rids[-1]), 30, "the last lines")
        # Logs never take the last RESERVE bytes (a little slack for the other files).
        assert free_bytes(disk) >= RESERVE - 4 * MB, free_bytes(disk)
        control_plane_works(server, functions, 1)

        # Another writer takes every free byte: the store gives space back by itself (no
        # restart), and the control plane works again.
        before = log_files_bytes(data)
        filler = fill(disk, "filler-1")
        try:
            assert wait_for(
                lambda: free_bytes(disk) >= RESERVE // 2, 90, "the log store to give space back"
            )
            assert log_files_bytes(data) < before
            control_plane_works(server, functions, 2)
        finally:
            filler.unlink()
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def test_a_restart_with_a_smaller_cap_on_a_full_disk_prunes_back(disk: Path) -> None:
    data = disk / "data"
    assert log_files_bytes(data) > 16 * MB  # what the floods above left
    filler = fill(disk, "filler-2")
    try:
        assert free_bytes(disk) < MB
        server = start(data, "--log-disk-cap", "8")
        try:
            wait_for(lambda: log_files_bytes(data) <= 8 * MB, 60, "the logs to shrink under 8 MB")
            lam = server.client()
            functions = Functions(lam)
            name = f"restart-{uuid.uuid4().hex[:8]}"
            assert wait_for(lambda: _try_create(functions, name), 30, "CreateFunction")
            out = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 2}))
            assert out["StatusCode"] == 200 and "FunctionError" not in out
            accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
            assert accepted["StatusCode"] == 202
        finally:
            assert server.stop() == 0, server.log()[-3000:]
    finally:
        filler.unlink()


def _try_create(functions: Functions, name: str) -> dict[str, Any] | None:
    """CreateFunction once; None if the server asked to retry (a full disk's 429)."""
    try:
        return functions.create(RECORDER, FunctionName=name)
    except functions.client.exceptions.TooManyRequestsException:
        time.sleep(0.5)
        return None


def test_a_disk_full_for_everything_answers_429_and_recovers(disk: Path) -> None:
    """With no reserve (`--log-disk-reserve 0`) and another writer taking every byte, a
    request that must write is answered 429 TooManyRequestsException with Retry-After,
    never a 500, leaves nothing behind, and works again once there is room."""
    import botocore.exceptions

    data = disk / "data"
    server = start(data, "--log-disk-reserve", "0")
    try:
        lam = server.client()
        functions = Functions(lam)
        name = f"full-{uuid.uuid4().hex[:8]}"
        recorder = functions.create(RECORDER)["FunctionName"]
        filler = fill(disk, "filler-3")
        try:
            with pytest.raises(lam.exceptions.TooManyRequestsException) as refused:
                functions.create(RECORDER, FunctionName=name)
            meta = refused.value.response["ResponseMetadata"]
            assert meta["HTTPStatusCode"] == 429
            assert meta["HTTPHeaders"]["retry-after"] == "5"
            assert "disk is full" in str(refused.value)
            with pytest.raises(lam.exceptions.ResourceNotFoundException):
                lam.get_function(FunctionName=name)  # nothing half-made
            # An async invoke either still fits (the WAL keeps room) or is refused the same
            # way: never a 500.
            answers = set()
            for _ in range(20):
                try:
                    resp = lam.invoke(
                        FunctionName=recorder,
                        InvocationType="Event",
                        Payload=json.dumps({"pad": "x" * 65536}),
                    )
                    answers.add(resp["StatusCode"])
                except botocore.exceptions.ClientError as e:
                    answers.add(e.response["ResponseMetadata"]["HTTPStatusCode"])
                    assert e.response["Error"]["Code"] == "TooManyRequestsException", e
            assert answers <= {202, 429}, answers
        finally:
            filler.unlink()
        control_plane_works(server, functions, 1)
    finally:
        assert server.stop() == 0, server.log()[-3000:]
