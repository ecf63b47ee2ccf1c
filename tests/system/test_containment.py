"""What a function can do to the machine from inside a namespace sandbox: nothing beyond its
own environment. Each attack is a real Python 3.11 function that tries the thing and returns
what happened (exception type and errno), so that each assertion names the exact outcome;
after each, the server is healthy and a neighbour function still answers right."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import random
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server
from tests.system._harness import (
    MB,
    Neighbour,
    alive,
    environment_pids,
    host_processes_with,
    invoke,
    result,
    wait_until,
)

# CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
# skipped: this skip can only hide these tests on an unprivileged developer machine.
if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

STREAM = """
import os
import random
import shutil
def stream():
    return os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
"""

FORK_BOMB = """
import os, signal, time
def handler(event, context):
    r, w = os.pipe()
    children, failures, error = [], 0, None
    # Bounded: stops after 20 refused forks, or at `limit` children if nothing refuses.
    while failures < 20 and len(children) < event["limit"]:
        try:
            pid = os.fork()
        except OSError as e:
            failures += 1
            error = error or {"type": type(e).__name__, "errno": e.errno}
            time.sleep(0.005)
            continue
        if pid == 0:
            os.close(w)
            try:
                os.read(r, 1)  # until the parent closes its end
            finally:
                os._exit(0)
        children.append(pid)
    os.close(w)
    os.close(r)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reaped = sum(1 for pid in children if os.waitpid(pid, 0)[0] == pid)
    left = [p for p in os.listdir("/proc") if p.isdigit()]
    return {"forked": len(children), "error": error, "reaped": reaped, "pids_left": len(left)}
"""

MEMORY_HOG = (
    STREAM
    + """
import time
chunks = []
def handler(event, context):
    if event.get("hog"):
        # Twice MemorySize (well within MemorySize + /tmp, the cgroup's hard limit), held a
        # while: the environment must die on the way.
        for _ in range(32):
            chunks.append(bytearray(b"\\x01") * (8 << 20))  # written: every page is charged
        time.sleep(2)
        return {"survived_mb": 8 * len(chunks)}
    return {"stream": stream()}
"""
)

SPIN = (
    STREAM
    + """
import subprocess
def handler(event, context):
    if event.get("spin"):
        # A process of its own session, which nothing in the sandbox waits for.
        subprocess.Popen(["/bin/sleep", event["marker"]], start_new_session=True)
        while True:
            pass
    return {"stream": stream()}
"""
)

CPU_SHARE = """
import time
def handler(event, context):
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - wall < 1:
        pass
    return {"cpu_s": time.process_time() - cpu}
"""

# Each environment has IPC objects, a hostname and a /tmp of its own.
PRIVATE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
def handler(event, context):
    if event["do"] == "leave":
        shm = libc.shmget(event["key"], 4096, IPC_CREAT | IPC_EXCL | 0o666)
        with open("/tmp/" + event["file"], "w") as f:
            f.write("secret")
        return {"shm": shm, "errno": ctypes.get_errno()}
    shm = [libc.shmget(event["key"], 0, 0), ctypes.get_errno()]
    hostname = [libc.sethostname(b"taken", 5), ctypes.get_errno()]
    return {"shm": shm, "tmp": sorted(os.listdir("/tmp")), "sethostname": hostname}
"""

FILL_TMP = """
import os
import random
import shutil
def handler(event, context):
    block = b"\\xab" * (1 << 20)
    written, error = 0, None
    fd = os.open("/tmp/fill", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < event["max_mb"] << 20:
            written += os.write(fd, block)
    except OSError as e:
        error = {"type": type(e).__name__, "errno": e.errno}
    finally:
        os.close(fd)
        os.unlink("/tmp/fill")
    return {"written_mb": written / (1 << 20), "error": error}
"""

# Every probe returns "ok" (with what it got) or the exception's type and errno.
PROBES = """
import ctypes, errno, os, platform, signal, socket, time

def attempt(fn):
    try:
        return {"ok": fn()}
    except OSError as e:
        return {"type": type(e).__name__, "errno": e.errno}

def read(path):
    with open(path, "rb") as f:
        return len(f.read())

def write(path):
    with open(path, "wb") as f:
        f.write(b"x")
    os.unlink(path)
    return True

libc = ctypes.CDLL(None, use_errno=True)

def call(fn, *args):
    def run():
        if fn(*args) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return True
    return attempt(run)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()

def cgroup_files():
    found = {}
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\\n").split(":", 2)
        names = controllers.split(",") if controllers else ["memory", "pids"]
        for name in names:
            candidates = {
                "memory": [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes",
                           f"/sys/fs/cgroup{path}/memory.max",
                           f"/sys/fs/cgroup/unified{path}/memory.max"],
                "pids": [f"/sys/fs/cgroup/pids{path}/pids.max",
                         f"/sys/fs/cgroup{path}/pids.max",
                         f"/sys/fs/cgroup/unified{path}/pids.max"],
            }.get(name, [])
            for candidate in candidates:
                if name not in found and os.path.isfile(candidate):
                    found[name] = open(candidate).read().strip()
    return found

def handler(event, context):
    probe = event["probe"]
    if probe == "files":
        data_dir = event["data_dir"]
        return {
            "shadow": attempt(lambda: read("/etc/shadow")),
            "data_dir": attempt(lambda: os.listdir(data_dir)),
            "database": attempt(lambda: read(os.path.join(data_dir, "lamina.db"))),
            "other_code": attempt(lambda: read(event["other_code"])),
            "task": sorted(os.listdir("/var/task")),
            "kmsg": attempt(lambda: read("/dev/kmsg")),
        }
    if probe == "writes":
        return {d: attempt(lambda: write(os.path.join(d, "lamina-probe"))) for d in event["dirs"]}
    if probe == "signals":
        out = {"server": attempt(lambda: os.kill(event["server_pid"], signal.SIGTERM))}
        out["init"] = attempt(lambda: os.kill(1, signal.SIGKILL))
        time.sleep(0.2)  # had init died, the whole sandbox would be gone by now
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        out["pids"] = sorted(pids)
        out["cmdlines"] = [open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
                           for p in pids]
        out["stream"] = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        return out
    if probe == "loopback":
        def connect():
            with socket.create_connection(("127.0.0.1", event["port"]), timeout=1):
                return True
        return attempt(connect)
    if probe == "privileges":
        nr_keyctl = {"x86_64": 250, "aarch64": 219}[platform.machine()]
        CLONE_NEWUSER, PTRACE_TRACEME, KEYCTL_JOIN_SESSION_KEYRING = 0x10000000, 0, 1
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
        return {
            "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
            "no_new_privs": status("NoNewPrivs"),
            "seccomp": status("Seccomp"),
            "unshare_user": call(libc.unshare, CLONE_NEWUSER),
            "mount": call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
            "ptrace": call(libc.ptrace, PTRACE_TRACEME, 0, 0, 0),
            "keyctl": call(libc.syscall, nr_keyctl, KEYCTL_JOIN_SESSION_KEYRING, None),
        }
    if probe == "identity":
        return {"hostname": socket.gethostname(), "cgroup": cgroup_files()}
    raise ValueError(probe)
"""


@pytest.fixture(scope="module")
def probes(ns_functions: Functions) -> str:
    code: dict[str, str | bytes] = {"app.py": PROBES, "own-file.txt": "mine"}
    return str(ns_functions.create(code, Timeout=10)["FunctionName"])


@contextmanager
def neighbour_busy(neighbour: Neighbour) -> Iterator[None]:
    """The neighbour invoked in a loop, from a thread of its own, while the block runs: every
    answer must be right."""
    stop = threading.Event()
    answers: list[int] = []
    errors: list[BaseException] = []
    lam = neighbour.server.client()

    def loop() -> None:
        while not stop.is_set():
            try:
                neighbour.check(lam)
                answers.append(1)
            except BaseException as e:
                errors.append(e)
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert len(answers) >= 2, "the neighbour was hardly invoked while the attack ran"


def test_fork_bomb_meets_the_pids_limit(
    ns_lam: Any, ns_functions: Functions, neighbour: Neighbour
) -> None:
    # 3,008 MB buys 1.7 CPUs: the bomb's 1,000 forks take about 2 s rather than 6 at 1 GB.
    name = str(ns_functions.create(FORK_BOMB, MemorySize=3008, Timeout=60)["FunctionName"])
    with neighbour_busy(neighbour):
        out = result(ns_lam, name, {"limit": 5000})
    assert out["error"] == {"type": "BlockingIOError", "errno": errno.EAGAIN}, out
    # pids.max is 1,024 tasks for the whole environment, init and runtime (and its threads)
    # included.
    assert 900 <= out["forked"] < 1024, out
    assert out["reaped"] == out["forked"]
    assert out["pids_left"] <= 3, out
    # Its children gone, the same environment can fork again.
    again = result(ns_lam, name, {"limit": 10})
    assert again == {"forked": 10, "error": None, "reaped": 10, "pids_left": out["pids_left"]}
    neighbour.assert_all_well()


def test_memory_hog_is_out_of_memory(
    ns_server: Server, ns_lam: Any, ns_functions: Functions, neighbour: Neighbour
) -> None:
    name = str(ns_functions.create(MEMORY_HOG, MemorySize=128, Timeout=60)["FunctionName"])
    before = result(ns_lam, name)["stream"]
    [pid] = environment_pids(ns_server, name)
    with neighbour_busy(neighbour):
        resp, out = invoke(ns_lam, name, {"hog": True})
    assert resp.get("FunctionError") == "Unhandled", out
    assert out["errorType"] == "Runtime.OutOfMemory", out
    # Discarded: its processes are gone, and the next invocation runs in a new environment.
    assert wait_until(lambda: not alive(pid)), f"sandbox {pid} outlived its environment"
    after = result(ns_lam, name)["stream"]
    assert after != before, "the environment that ran out of memory was reused"
    neighbour.assert_all_well()


def test_busy_loop_times_out(
    ns_server: Server, ns_lam: Any, ns_functions: Functions, neighbour: Neighbour
) -> None:
    name = str(ns_functions.create(SPIN, Timeout=1)["FunctionName"])
    before = result(ns_lam, name)["stream"]
    [pid] = environment_pids(ns_server, name)
    # `sleep` with a unique duration: the orphan it leaves is recognisable on the host.
    marker = f"{random.randrange(5000, 9000)}.{random.randrange(10**6):06d}"
    outcome: list[tuple[dict[str, Any], Any]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(
            invoke(ns_server.client(), name, {"spin": 1, "marker": marker})
        )
    )
    caller.start()
    orphan_seen = wait_until(lambda: bool(host_processes_with(marker)), timeout=3)
    caller.join(30)
    [(resp, out)] = outcome
    assert resp.get("FunctionError") == "Unhandled", out
    assert out["errorType"] == "Sandbox.Timedout", out
    assert "Task timed out after 1.00 seconds" in out["errorMessage"], out
    # Replaced: nothing of it is left on the host, the orphan included.
    assert orphan_seen, "the function's orphan never started (the check below would be moot)"
    assert wait_until(lambda: not alive(pid)), f"sandbox {pid} outlived its environment"
    assert wait_until(lambda: not host_processes_with(marker)), "an orphan outlived its sandbox"
    after = result(ns_lam, name)["stream"]
    assert after != before, "the environment that timed out was reused"
    neighbour.assert_all_well()


@pytest.mark.parametrize(("memory_mb", "low", "high"), [(128, 0.04, 0.12), (1769, 0.8, 1.05)])
def test_cpu_in_proportion_to_memory(
    ns_lam: Any, ns_functions: Functions, memory_mb: int, low: float, high: float
) -> None:
    # Lambda: 1,769 MB buys one vCPU; 128 MB, 7% of one.
    name = str(ns_functions.create(CPU_SHARE, MemorySize=memory_mb, Timeout=10)["FunctionName"])
    out = result(ns_lam, name)
    assert low <= out["cpu_s"] <= high, out


def test_environments_keep_ipc_hostname_and_tmp_apart(
    ns_lam: Any, ns_functions: Functions, neighbour: Neighbour
) -> None:
    key, file = random.randrange(1, 2**31), f"secret-{uuid.uuid4().hex}"
    first = str(ns_functions.create(PRIVATE, Timeout=10)["FunctionName"])
    second = str(ns_functions.create(PRIVATE, Timeout=10)["FunctionName"])
    left = result(ns_lam, first, {"do": "leave", "key": key, "file": file})
    assert left["shm"] >= 0, left
    seen = result(ns_lam, second, {"do": "look", "key": key})
    assert seen["shm"] == [-1, errno.ENOENT], seen
    assert file not in seen["tmp"], seen
    assert seen["sethostname"] == [-1, errno.EPERM], seen
    # Nor does the host see the segment.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.shmget(key, 0, 0) == -1 and ctypes.get_errno() == errno.ENOENT
    neighbour.assert_all_well()


@pytest.mark.parametrize(("size_mb", "memory_mb"), [(512, 128), (600, 512)])
def test_tmp_fills_up_at_its_size(
    ns_lam: Any, ns_functions: Functions, neighbour: Neighbour, size_mb: int, memory_mb: int
) -> None:
    # /tmp is storage apart from memory (as on Lambda): a 128 MB function fills all of a
    # 512 MB /tmp without being killed for memory.
    name = str(
        ns_functions.create(
            FILL_TMP, MemorySize=memory_mb, Timeout=60, EphemeralStorage={"Size": size_mb}
        )["FunctionName"]
    )
    out = result(ns_lam, name, {"max_mb": 4 * size_mb})
    assert out["error"] == {"type": "OSError", "errno": errno.ENOSPC}, out
    assert size_mb - 12 <= out["written_mb"] <= size_mb + 1, out
    neighbour.assert_all_well()


def test_files_out_of_reach(
    ns_server: Server, ns_lam: Any, probes: str, neighbour: Neighbour
) -> None:
    # The neighbour's code as Lamina unpacked it on the host (world-readable there).
    others = [
        p
        for p in glob.glob(str(ns_server.data_dir / "code" / "tasks" / "*" / "app.py"))
        if "neighbour-marker" in Path(p).read_text()
    ]
    assert len(others) == 1
    assert (ns_server.data_dir / "lamina.db").is_file()
    out = result(
        ns_lam,
        probes,
        {"probe": "files", "data_dir": str(ns_server.data_dir), "other_code": others[0]},
    )
    assert out["shadow"] == {"type": "PermissionError", "errno": errno.EACCES}
    # The data directory is hidden: empty, or not there at all.
    assert out["data_dir"] in (
        {"ok": []},
        {"type": "FileNotFoundError", "errno": errno.ENOENT},
        {"type": "PermissionError", "errno": errno.EACCES},
    ), out
    for key in ("database", "other_code"):
        assert out[key].get("errno") in (errno.ENOENT, errno.EACCES), (key, out)
    assert out["task"] == ["app.py", "own-file.txt"]
    # the sandbox's /dev holds only null, zero, full, random, urandom and tty
    assert out["kmsg"].get("errno") in (errno.ENOENT, errno.EACCES, errno.EPERM), out
    neighbour.assert_all_well()


def test_host_processes_out_of_reach(
    ns_server: Server, ns_lam: Any, probes: str, neighbour: Neighbour
) -> None:
    assert ns_server.proc is not None
    out = result(ns_lam, probes, {"probe": "signals", "server_pid": ns_server.proc.pid})
    assert out["server"] == {"type": "ProcessLookupError", "errno": errno.ESRCH}, out
    # SIGKILL to the namespace's own init, from inside, is ignored by the kernel.
    assert out["init"] == {"ok": None}, out
    assert 1 in out["pids"] and len(out["pids"]) <= 3, out
    assert not any("lamina" in c and "serve" in c for c in out["cmdlines"]), out
    # The same environment goes on serving.
    again = result(ns_lam, probes, {"probe": "signals", "server_pid": ns_server.proc.pid})
    assert again["stream"] == out["stream"]
    neighbour.assert_all_well()


def test_host_loopback_out_of_reach(ns_lam: Any, probes: str, neighbour: Neighbour) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        out = result(ns_lam, probes, {"probe": "loopback", "port": port})
        # The function's 127.0.0.1 is its own: nothing listens there on that port.
        assert out == {"type": "ConnectionRefusedError", "errno": errno.ECONNREFUSED}, out
        with pytest.raises(BlockingIOError):
            listener.accept()
    neighbour.assert_all_well()


def test_nothing_writable_but_tmp(ns_lam: Any, probes: str, neighbour: Neighbour) -> None:
    read_only = ["/var/task", "/opt", "/var/runtime", "/etc", "/", "/var", "/dev", "/usr"]
    # not there at all in the sandbox's root (it holds the host's system directories only)
    absent = ["/var/tmp", "/dev/shm", "/run", "/home"]
    out = result(ns_lam, probes, {"probe": "writes", "dirs": [*read_only, *absent, "/tmp"]})
    for d in read_only:
        assert out[d].get("errno") in (errno.EROFS, errno.EACCES), (d, out[d])
    for d in absent:
        assert out[d].get("errno") == errno.ENOENT, (d, out[d])
    assert out["/tmp"] == {"ok": True}
    neighbour.assert_all_well()


def test_unprivileged_and_filtered(ns_lam: Any, probes: str, neighbour: Neighbour) -> None:
    import pwd

    # Lambda's sbx_user1051 (993/990), unless the host already gives uid 993 to someone.
    try:
        pwd.getpwuid(993)
        uid, gid = 65534, 65534
    except KeyError:
        uid, gid = 993, 990
    out = result(ns_lam, probes, {"probe": "privileges"})
    assert out["ids"] == [uid, uid, gid, gid, []], out
    assert out["no_new_privs"] == "1"
    assert out["seccomp"] == "2"
    eperm = {"type": "PermissionError", "errno": errno.EPERM}
    for call in ("unshare_user", "mount", "ptrace", "keyctl"):
        assert out[call] == eperm, (call, out[call])
    neighbour.assert_all_well()


def test_own_hostname_and_cgroup(ns_lam: Any, probes: str, neighbour: Neighbour) -> None:
    out = result(ns_lam, probes, {"probe": "identity"})
    assert out["hostname"] != socket.gethostname()
    # The cgroup caps memory at MemorySize + the /tmp size (tmpfs pages are charged to it),
    # and tasks at Lambda's 1,024.
    assert int(out["cgroup"]["memory"]) == (128 + 512) * MB, out
    assert out["cgroup"]["pids"] == "1024", out
    neighbour.assert_all_well()


def test_environments_report_sandbox_pids(ns_server: Server, neighbour: Neighbour) -> None:
    neighbour.check()
    envs = SIGNED_HTTP.get(ns_server.endpoint + "/lamina/environments", timeout=5).json()
    mine = [e for e in envs["Environments"] if e["FunctionName"] == neighbour.name]
    assert mine, envs
    for env in mine:
        # A host pid of the sandbox's init: alive, and in a PID namespace of its own.
        pid = env["Pid"]
        assert isinstance(pid, int) and pid > 1
        assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_the_sandbox_init_is_native_unprivileged_and_filtered(
    ns_server: Server, neighbour: Neighbour
) -> None:
    """The init (PID 1) of each sandbox: the native one where a C compiler built it
    (`_native_init`), holding little memory of its own; either way as the sandbox user, with
    no_new_privs and the seccomp filter, as before it exec'd."""
    neighbour.check()
    envs = SIGNED_HTTP.get(ns_server.endpoint + "/lamina/environments", timeout=5).json()
    mine = [e for e in envs["Environments"] if e["FunctionName"] == neighbour.name]
    assert mine, envs
    for env in mine:
        pid = env["Pid"]
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        assert status["Uid"].split()[0] != "0", status["Uid"]
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"
        # Not dumpable (the kernel then gives its /proc files to root): the function, under
        # the same uid, cannot write its memory.
        assert Path(f"/proc/{pid}/mem").stat().st_uid == 0
        if shutil.which("cc") is not None:
            assert Path(os.readlink(f"/proc/{pid}/exe")).name.startswith("init-")
            private = 0
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1])
            assert private < 512, f"the init holds {private} KiB of its own"
    neighbour.assert_all_well()
