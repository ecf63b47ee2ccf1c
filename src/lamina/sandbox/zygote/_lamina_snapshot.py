"""SnapStart templates, the runtime's side (standard library only, any Python 3.9 to 3.13).

A template is a Python runtime whose bootstrap has imported the function and run its
before-snapshot hooks, then stopped at its snapshot point (`bootstrap.snapshot_point`). There
`serve()` turns it into a fork-server of copies of itself: each copy leaves `serve()` and goes
on in the bootstrap (after-restore hooks, then invocations) with the module state of the
template and memory shared with it copy-on-write, but an environment of its own.

On the template's control socket (SOCK_SEQPACKET, one JSON object a message, descriptors by
SCM_RIGHTS):
- template → server: `{"op": "snapshotted"}`, once, when it is ready to be copied;
- server → template: `{"op": "restore", "id": ID}` with the copy's control socket;
- template → server: `{"op": "restored", "id": ID, "pid": PID}` (PID in the template's own
  PID namespace) or `{"op": "restored", "id": ID, "error": "..."}`;
- template → server: `{"op": "exit", "pid": PID, "status": S}` for each copy that exits;
- the server closing it ends the template and every copy.

On a copy's control socket:
- copy → server: `{"hello": true}` (the server has SO_PASSCRED on: the message carries the
  copy's pid as the server sees it);
- server → copy: `{"isolate": true, "tmp_mb": N}` once it has put the copy in its cgroup;
- copy → server: `{"ready": true}` once isolated (it may wait so, made ahead of need);
- server → copy: `{"env": {...}}` with the copy's stdout/stderr: its go;
- copy → server: nothing, closing the socket once it runs the function (or `{"error": ...}`
  at any step).

Two ways to copy. `become_plain` (the process backend): a fork in its own process group.
`IsolatedCopies` (the namespace backend): a fork that moves itself into new user, mount,
PID, network, IPC and UTS namespaces. The template runs as the sandbox user without
privileges, so its copy gets the rights to finish its own isolation from a user namespace of
its own, mapping only the sandbox user: a fresh /tmp (the template's files copied in), a
fresh /proc for its PID namespace, then every capability dropped and the rest of the seccomp
filter installed before any of the function's code runs again. The server meanwhile puts it
in its cgroup and prepares its network namespace (loopback, the Runtime API, the veth) from
outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import selectors
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable
from typing import Any

import seccomp  # type: ignore[import-not-found]  # this directory is sys.path[0]
from _lamina_wire import receive, run_init, send  # type: ignore[import-not-found]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: the namespaces a copy gets (the cgroup is the server's to choose)
COPY_NAMESPACES = (
    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
)
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NR_CAPSET = {"x86_64": 126, "aarch64": 91}.get(platform.machine(), -1)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]

#: a copy's part, called in the new process with its control socket: returns in the
#: process that goes on to run the function (or never)
Become = Callable[[socket.socket], None]


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def sever_sockets(keep: set[int]) -> int:
    """Close every network connection the function opened during its init, as a snapshot
    does on Lambda (none survives a restore): each socket descriptor but `keep` becomes one
    end of a closed socket pair, so the function's own objects read end-of-file and fail to
    write, and reconnect, instead of every copy sharing one connection. Returns how many."""
    severed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
        except OSError:
            continue  # the directory's own descriptor, gone by now
        dead, peer = socket.socketpair()
        peer.close()
        os.dup2(dead.fileno(), fd, inheritable=os.get_inheritable(fd))
        dead.close()
        severed += 1
    return severed


def serve(ctl: socket.socket, fork: Callable[[], int], become: Become) -> None:
    """The template's loop (see the module's docstring). Returns only in a copy."""
    sever_sockets({ctl.fileno()})
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # Every object the init made, out of the collector's sight: a copy's collections would
    # otherwise touch (and so copy) each of their pages.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    copies: set[int] = set()
    send(ctl, {"op": "snapshotted"})
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                _reap(ctl, wake_r, copies)
                continue
            message, fds = receive(ctl)
            if message is None:
                for pid in copies:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                os._exit(0)
            if message.get("op") != "restore" or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                continue
            copy_ctl = socket.socket(fileno=fds[0])
            try:
                pid = fork()
            except OSError as e:
                copy_ctl.close()
                send(ctl, {"op": "restored", "id": message.get("id"), "error": str(e)})
                continue
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                selector.close()
                os.close(wake_r)
                os.close(wake_w)
                ctl.close()
                try:
                    become(copy_ctl)
                except BaseException as e:
                    with contextlib.suppress(BaseException):
                        send(copy_ctl, {"error": str(e), "errno": getattr(e, "errno", None)})
                    os._exit(1)
                return
            copies.add(pid)
            copy_ctl.close()
            send(ctl, {"op": "restored", "id": message.get("id"), "pid": pid})


def _reap(ctl: socket.socket, wake_r: int, copies: set[int]) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(wake_r, 512):
            pass
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        copies.discard(pid)
        send(ctl, {"op": "exit", "pid": pid, "status": os.waitstatus_to_exitcode(status)})


def _next(ctl: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The server's next message; the end of this process if it gave the copy up."""
    message, fds = receive(ctl)
    if message is None:
        os._exit(0)
    return message, fds


def _go(ctl: socket.socket) -> tuple[dict[str, Any], int]:
    """Say ready, then wait for the server's go: (the go, the copy's output descriptor)."""
    send(ctl, {"ready": True})
    go, fds = _next(ctl)
    if not fds:
        os._exit(0)
    for extra in fds[1:]:
        os.close(extra)
    return go, fds[0]


def _take_over(ctl: socket.socket, go: dict[str, Any], output: int) -> None:
    """Become the copy that runs the function: its output, its environment."""
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    env = go.get("env") or {}
    os.environ.clear()
    os.environ.update(env)
    ctl.close()  # the server reads the hand-over from this close


def become_plain(ctl: socket.socket) -> None:
    """A copy for the process backend: a process group of its own, nothing more."""
    os.setsid()
    send(ctl, {"hello": True})
    _next(ctl)
    go, output = _go(ctl)
    _take_over(ctl, go, output)


class IsolatedCopies:
    """Copies in namespaces of their own (see the module's docstring). `init_fd`: the
    sandboxes' native init (-1: a Python one)."""

    def __init__(self, uid: int, gid: int, copy_filter: bytes, init_fd: int) -> None:
        self._uid = uid
        self._gid = gid
        self._filter = copy_filter
        self._init_fd = init_fd

    def fork(self) -> int:
        # The C library's fork, not a raw clone() with namespace flags: fork handlers must
        # run, as in any process that forks (OpenBLAS, which NumPy loads, stops its thread
        # pool in its handler; without it a copy's first matrix product waits forever for
        # threads the fork did not copy). The copy makes its namespaces itself.
        return os.fork()

    def become(self, ctl: socket.socket) -> None:
        # A fork of the template, single-threaded: new namespaces, then every capability in
        # the new user namespace (none outside it) until `_drop_capabilities`.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _check(_libc.unshare(COPY_NAMESPACES), "unshare")
        _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # (the map files belong to dumpable tasks)
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{self._uid} {self._uid} 1")
            _write("/proc/self/gid_map", f"{self._gid} {self._gid} 1")
        finally:
            _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        send(ctl, {"hello": True})
        isolate, _ = _next(ctl)  # (in its cgroup now: what it allocates is charged there)
        # The new PID namespace is its children's: the first is its PID 1 (the sandbox's
        # init, which forks the runtime); this process only passes the init's exit on.
        init = os.fork()
        if init != 0:
            self._be_init(ctl, init)
        template_tmp = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
        try:
            tmp_mb = int(isolate.get("tmp_mb") or 512)
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
            _copy_tree(template_tmp, "/tmp")
        finally:
            os.close(template_tmp)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _drop_capabilities()
        seccomp.install(self._filter)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        runtime = os.fork()
        if runtime != 0:
            self._be_init(ctl, runtime)
        if self._init_fd >= 0:
            os.close(self._init_fd)
        go, output = _go(ctl)
        _take_over(ctl, go, output)

    def _be_init(self, ctl: socket.socket, runtime: int) -> None:
        """Reap until `runtime` exits, then exit as it did (the sandbox init's convention,
        see the zygote's `be_init`): PID 1 of the copy's namespace, and the process the
        template forked, which passes PID 1's exit on to the template."""
        ctl.close()
        run_init(runtime, self._init_fd)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def mount(src: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(src.encode(), target.encode(), fstype.encode(), flags, data.encode() or None),
        f"mount {fstype} on {target}",
    )


def _drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (those of the copy's own user
    namespace: it never had any outside it)."""
    header = struct.pack("II", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two struct __user_cap_data_struct, all zero
    _check(_libc.syscall(_NR_CAPSET, header, data), "capset")


def _copy_tree(src_dir: int, dest: str) -> None:
    """Copy what the template left in its /tmp (opened as `src_dir`) into the copy's:
    regular files, directories and symbolic links, with their modes."""
    for entry in os.scandir(src_dir):
        target = os.path.join(dest, entry.name)
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.name, dir_fd=src_dir), target)
        elif stat.S_ISDIR(info.st_mode):
            os.mkdir(target, stat.S_IMODE(info.st_mode) | 0o700)
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=src_dir)
            try:
                _copy_tree(sub, target)
            finally:
                os.close(sub)
            os.chmod(target, stat.S_IMODE(info.st_mode))
        elif stat.S_ISREG(info.st_mode):
            source = os.open(entry.name, os.O_RDONLY, dir_fd=src_dir)
            try:
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    while chunk := os.read(source, 1 << 20):
                        os.write(out, chunk)
                finally:
                    os.close(out)
            finally:
                os.close(source)
            os.chmod(target, stat.S_IMODE(info.st_mode))


def main() -> None:
    """The process backend's template: `python -B _lamina_snapshot.py FD BOOTSTRAP`, FD the
    template's control socket, BOOTSTRAP the runtime's bootstrap.py."""
    ctl = socket.socket(fileno=int(sys.argv[1]))
    bootstrap_path = sys.argv[2]
    del sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    runtime_dir = os.path.dirname(os.path.abspath(bootstrap_path))
    sys.path.insert(0, runtime_dir)
    import bootstrap  # type: ignore[import-not-found]

    def point() -> None:
        serve(ctl, os.fork, become_plain)

    bootstrap.snapshot_point = point
    sys.argv[0] = bootstrap_path
    bootstrap.main()


if __name__ == "__main__":
    main()
