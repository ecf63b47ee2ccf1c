"""The zygote: a warm fork-server that makes namespace sandboxes.

Started by the Lamina server (as root) under one runtime's own interpreter — any Python
3.9 to 3.13, so this file uses the standard library only and imports nothing from `lamina`:

    python -B zygote.py FD

FD is a SOCK_SEQPACKET socket to the server. Each message is one JSON object, possibly
carrying descriptors (SCM_RIGHTS). The server speaks first with `init`; then:

- `spawn` (descriptors: the child's control socket, its network namespace; `nice`: the CPU
  priority the child isolates itself at, 0 again once claimed; `image`: a container image's
  unpacked root, the child's root instead of the host's system directories, see
  `build_image_root`) → the zygote clones a child
  with one `clone()` carrying new mount, PID, IPC and UTS namespaces, answers `spawned`
  with the child's pid, and goes back to waiting. The child joins its cgroups and
  network namespace, builds its root (`build_root`), pivots into it, installs most of the
  seccomp filter, forks the sandbox's init (PID 1, which reaps and reports the runtime's
  exit), warms itself up, says `ready` on its own control socket and waits there to be
  *claimed*.
- Every child that exits is reaped here and reported as `exit` with its status.

Claim (server → child, with the descriptor for stdout/stderr and the function's files as
detached mount trees) attaches a function: its code at /var/task, layers at /opt, an exec'd
runtime at /var/runtime, /tmp resized if need be; then the rest of the seccomp filter,
rlimits and an unprivileged uid/gid. A Python zygote's child then runs the runtime bootstrap
it already imported (its standard modules are warm, so a cold start pays little more than the
handler's import); other runtimes, and container images' entry points, are exec'd. The child
closes its control socket as it hands over (or reports the error that stopped it), which is
how the server knows the claim took. A container image's child attaches nothing: its root,
built from the image (`build_image_root`), has the function's files already.

Why a fork-server rather than exec: a fresh interpreter costs 11 to 15 ms (far more through a
version manager's shim); a fork of a warm one costs 1 to 2 ms on the dev machine, and pages the
zygote imported stay shared with every child (`gc.freeze()` keeps the collector from
dirtying them).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import os
import platform
import resource
import selectors
import signal
import socket
import stat
import sys
from typing import Any

import _lamina_snapshot as snapshot  # type: ignore[import-not-found]
import seccomp  # type: ignore[import-not-found]  # this directory is sys.path[0]
from _lamina_wire import receive, run_init, send  # type: ignore[import-not-found]

# -- syscalls ----------------------------------------------------------------------------

_ARCH = platform.machine()
_NR = {
    "x86_64": {"clone": 56, "pivot_root": 155, "move_mount": 429, "mount_setattr": 442},
    "aarch64": {"clone": 220, "pivot_root": 41, "move_mount": 429, "mount_setattr": 442},
}.get(_ARCH, {})

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOVE_MOUNT_F_EMPTY_PATH = 0x4

PR_SET_PDEATHSIG = 1
#: Lambda's default /tmp size (MB); mounted ahead, resized at claim when a function differs
DEFAULT_TMP_MB = 512
#: the host directories a sandbox sees (read-only), where they exist
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
#: the devices a sandbox has in its /dev
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
#: what a container image's root must hold for the sandbox's own mounts: directories, files
#: (the unpacker in `lamina.images` makes them; nothing is ever made in an image here)
IMAGE_DIRS = ("dev", "proc", "sys", "tmp", "etc")
IMAGE_FILES = ("etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf")
#: an image sandbox's /etc/hosts (the image's own is no more than a placeholder, as in Docker)
IMAGE_HOSTS = "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost\n"
#: where an entry point without a "/" is looked up when its environment has no PATH
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

_libc = ctypes.CDLL(None, use_errno=True)
# clone() must run with the GIL held (the child resumes inside this call), so through PyDLL.
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(_b(src), _b(target), _b(fstype), flags, _b(data) if data else None),
        f"mount {src or fstype} on {target}",
    )


def bind_ro(src: str, target: str) -> None:
    """Bind `src` at `target`, read-only and nosuid (a bind takes its flags in a remount)."""
    mount(src, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def attach_tree(tree: int, target: str) -> None:
    """Mount a detached tree (made by the server with open_tree(OPEN_TREE_CLONE) in the host's
    mount namespace) at `target`, read-only: how a sandbox that has already left the host's
    filesystem gets the function's files."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    flags = AT_EMPTY_PATH | AT_RECURSIVE
    _check(
        _libc.syscall(_NR["mount_setattr"], tree, b"", flags, ctypes.byref(attr), 32),
        f"mount_setattr {target}",
    )
    _check(
        _libc.syscall(_NR["move_mount"], tree, b"", -100, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
        f"move_mount {target}",
    )
    os.close(tree)


def make_tree_readonly(root: str) -> None:
    """Every mount under `root` read-only and nosuid: one mount_setattr() where the kernel
    has it (5.12+), else a remount per mount."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    nr = _NR.get("mount_setattr")
    if nr is not None:
        res = _libc.syscall(
            nr, -100, _b(root), AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
        )
        if res == 0:
            return
        if ctypes.get_errno() != errno.ENOSYS:
            _check(res, f"mount_setattr {root}")
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if point == root or point.startswith(root + "/"):
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
            _libc.mount(None, _b(point), None, flags, None)  # best effort per submount


#: what Lambda's /etc/hosts adds: the name extensions' Telemetry API listeners use
SANDBOX_HOSTS_LINE = "127.0.0.1\tsandbox.localdomain sandbox\n"


def add_sandbox_host(root: str) -> None:
    """The host's /etc/hosts plus `sandbox.localdomain` (the sandbox's own loopback), bound
    over the sandbox's /etc/hosts (made in the root tmpfs)."""
    target = root + "/etc/hosts"
    if not os.path.isfile(target):
        return
    with open(target) as f:
        content = f.read()
    if content and not content.endswith("\n"):
        content += "\n"
    bind_text(content + SANDBOX_HOSTS_LINE, target, root)


def bind_text(text: str, target: str, scratch: str) -> None:
    """Bind a file holding `text` over the file `target`. The file is made in `scratch` (a
    tmpfs of the sandbox's own) and unlinked once bound: the mount keeps it, and `scratch`
    shows nothing more."""
    source = scratch + "/.lamina-" + os.path.basename(target)
    with open(source, "w") as f:
        f.write(text)
    os.chmod(source, 0o644)
    try:
        mount(source, target, None, MS_BIND)
    finally:
        os.unlink(source)


def image_path(image: str, name: str, directory: bool) -> str:
    """Where `name` (relative to the image's root) is in the image: its symbolic links
    followed as they would be with the image as `/` (an absolute link from the image's
    root, `..` never above it), so that a mount made before pivot_root lands on the image's
    own file, never on the host's. Returns the path relative to the image's root; OSError
    naming it if it is missing, or not a directory (`directory`) or a regular file."""
    wanted = "a directory" if directory else "a regular file"
    parts = [p for p in name.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in (".", ".."):
            if part == ".." and done:
                done.pop()
            continue
        path = os.path.join(image, *done, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = 0
        if stat.S_ISLNK(mode):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"the image's /{name}: too many symbolic links")
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        last = not parts
        ok = stat.S_ISDIR(mode) if directory or not last else stat.S_ISREG(mode)
        if not ok:
            problem = "missing" if not mode else "not " + (wanted if last else "a directory")
            raise OSError(
                errno.ENOENT if not mode else errno.ENOTDIR,
                f"the image's /{name} must be {wanted} for the sandbox to mount over"
                f" ({path} is {problem})",
            )
        done.append(part)
    if not done:
        raise OSError(errno.EINVAL, f"the image's /{name} is its root: no place to mount over")
    return "/".join(done)


def pivot_into(root: str) -> None:
    """Make `root` the process's `/` and drop the old root from view."""
    os.chdir(root)
    _check(_libc.syscall(_NR["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def clone(flags: int) -> int:
    """fork() with namespace flags: the raw clone syscall, wrapped in the interpreter's own
    before/after-fork hooks as `os.fork()` does (locks, at-fork callbacks, thread state)."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _libc_gil.syscall(_NR["clone"], ctypes.c_ulong(flags | SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        err = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, f"clone: {os.strerror(err)}")
    return int(pid)


def warm_up() -> None:
    """Do, in a pooled child before any claim, what a cold start is about to do: import a
    module from a fresh directory, round-trip JSON, format a log line, change the
    environment, make a socket.

    A forked child shares the zygote's memory until it writes to it, and in CPython merely
    touching an object writes its reference count: the first touch of each page costs a
    copy-on-write fault (several microseconds in a VM). Paying them here, off the request
    path, took about a millisecond and a half off a measured cold start.
    """
    import importlib
    import logging

    directory = "/tmp/.lamina-warm-up"
    name = "lamina_warm_up_module"
    os.mkdir(directory)
    try:
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write("import json\n\ndef handler(event, context):\n    return {'ok': True}\n")
        sys.path.insert(0, directory)
        module = importlib.import_module(name)
        json.loads(json.dumps(module.handler({"key": [1, 2.5, "x", None]}, None)))
    finally:
        sys.modules.pop(name, None)
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path_importer_cache.pop(directory, None)
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        os.rmdir(directory)
    record = logging.LogRecord("warm", logging.INFO, __file__, 1, "%s", ("x",), None)
    logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(message)s").format(record)
    os.environ["LAMINA_WARM_UP"] = "1"
    del os.environ["LAMINA_WARM_UP"]
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()


# -- the child ---------------------------------------------------------------------------


class Child:
    """Everything one child does, from the clone to the hand-over. Never returns."""

    def __init__(
        self,
        config: dict[str, Any],
        ctl: socket.socket,
        netns: int,
        nice: int = 0,
        image: str | None = None,
        template: bool = False,
    ) -> None:
        self.config = config
        self.ctl = ctl
        self.netns = netns
        self.nice = nice
        #: a SnapStart template's sandbox (see `_lamina_snapshot.py`): its filter lets its copies
        #: make their own namespaces, and it keeps the native init for them
        self.template = template
        #: the template's control socket, once claimed
        self.template_ctl: socket.socket | None = None
        #: a container image's unpacked root (on the host), this sandbox's root; None: zip
        self.image = image
        self.root = config["staging"]
        self.extension_output = -1

    def run(self, cgroups: list[str]) -> None:
        code = 1
        try:
            self.isolate(cgroups)
            send(self.ctl, {"ready": True})
            claim, fds = receive(self.ctl)
            if claim is None:
                code = 0  # discarded before use
            else:
                self.attach(claim, fds)
                code = self.hand_over(claim)
        except BaseException as e:
            try:
                sys.stderr.write(f"lamina sandbox: {e}\n")
                sys.stderr.flush()
                info: dict[str, Any] = {"error": str(e), "errno": getattr(e, "errno", None)}
                if isinstance(e, OSError) and e.filename is not None:
                    info["filename"] = str(e.filename)
                send(self.ctl, info)
            except BaseException:
                pass
        finally:
            os._exit(code)

    def isolate(self, cgroups: list[str]) -> None:
        """Before a function is known: cgroups, network, the read-only root."""
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if self.nice:
            # Made for the pool: isolated in the CPU time that cold starts leave (the
            # sandbox's init keeps this priority: it only waits).
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        for procs in cgroups:
            with open(procs, "w") as f:
                f.write("0")
        _check(_libc.setns(self.netns, CLONE_NEWNET), "setns net")
        os.close(self.netns)
        socket.sethostname("lamina")
        if self.image is not None:
            self.build_image_root(self.root, self.image)
        else:
            self.build_root(self.root)
        # Leave the host's filesystem now, ahead of any claim: detaching the old root costs
        # about a millisecond that a cold start would otherwise pay.
        pivot_into(self.root)
        seccomp.install(_TEMPLATE_FILTER if self.template else _FILTER)
        runtime = os.fork()
        if runtime != 0:
            self.be_init(runtime)
        if _INIT_FD >= 0 and not self.template:
            os.close(_INIT_FD)  # the init's own: a function has no use for it
        if self.config.get("python"):
            warm_up()
            _BOOTSTRAP.prepare()
            address = self.config.get("runtime_api")
            if address and hasattr(_BOOTSTRAP, "preconnect"):
                _BOOTSTRAP.preconnect(address)

    def build_root(self, root: str) -> None:
        """The sandbox's root filesystem, on an empty tmpfs: the host's system directories
        (/usr, /etc, /bin, /lib...) and /sys bound read-only, the sandbox's own /etc/passwd
        and /etc/group over the host's, a /dev of the harmless devices only, a fresh /proc,
        and Lambda's own places (/var/task, /var/runtime, /var/lang, /opt, /tmp).

        Not the whole host root: a read-only mount does not stop connect() on a unix socket,
        so /run, /var/run, /var/lib, /tmp and /dev of the host (a database's socket,
        /dev/log, D-Bus) must not be there at all. Nor /home, /root, /srv or Lamina's data.
        """
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=755")
        for name in SYSTEM_DIRS:
            host = "/" + name
            if os.path.islink(host):  # merged /usr: /bin -> usr/bin
                os.symlink(os.readlink(host), root + host)
            elif os.path.isdir(host):
                os.mkdir(root + host)
                mount(host, root + host, None, MS_BIND | MS_REC)
        for name in ("dev", "proc", "sys", "tmp", "opt", "var/task", "var/runtime", "var/lang"):
            os.makedirs(os.path.join(root, name), exist_ok=True)
        # Node.js resolves an ES module's bare imports through the node_modules of the
        # importing file's parents only (never NODE_PATH): from /var/task that reaches
        # /node_modules, which leads to the runtime's bundled SDK, as Lambda's ESM imports
        # of @aws-sdk/* find it.
        os.symlink("/var/lang/lib/node_modules", root + "/node_modules")
        for name, source in self.config.get("etc_files", {}).items():
            # Lambda's own user database (the sandbox user sbx_user1051, its group) over the
            # host's: home-directory and user-name lookups work, and reveal nothing.
            mount(source, f"{root}/etc/{name}", None, MS_BIND)
        mount("/sys", root + "/sys", None, MS_BIND | MS_REC)
        make_dev(root + "/dev")
        for path in self.config["expose"]:
            # A runtime outside the system directories (pyenv's under /root, say): bound
            # at its own path, and nothing of what is beside it.
            os.makedirs(root + path, exist_ok=True)
            mount(path, root + path, None, MS_BIND | MS_REC)
        runtime_dir = self.config.get("runtime_dir")
        if runtime_dir:
            mount(runtime_dir, root + "/var/runtime", None, MS_BIND | MS_REC)
        add_sandbox_host(root)
        lang_dir = self.config.get("lang_dir")
        if lang_dir:
            mount(lang_dir, root + "/var/lang", None, MS_BIND | MS_REC)
        # Everything so far read-only (the root tmpfs included), then the writable /tmp.
        make_tree_readonly(root)
        for path in self.config["masks"]:
            if os.path.isdir(root + path):
                mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k")
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        # /opt empty until a function with layers claims the sandbox; /tmp at Lambda's
        # default size, resized at claim if the function asks for another.
        mount("tmpfs", root + "/opt", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k")
        mount(
            "tmpfs",
            root + "/tmp",
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"size={DEFAULT_TMP_MB}m,mode=1777",
        )

    def build_image_root(self, root: str, image: str) -> None:
        """The root of a container-image function's sandbox: the image's unpacked root
        bound read-only as `/` (with nosuid and nodev), and over it what `build_root` gives a
        zip function's: the sandbox's own /etc/passwd and /etc/group, an /etc/hosts naming
        `sandbox.localdomain`, the host's /etc/resolv.conf (names resolve as the host's),
        /sys read-only, a /dev of the harmless devices, a fresh /proc, the /tmp tmpfs. Of
        the host's system directories, nothing: the runtime runs on the image's files.

        The image is read-only from its first mount on, so nothing here can write into it;
        its mount points are found first (see `image_path`): one missing fails the sandbox.
        """
        # Found in the image (links followed inside it), mounted at the same places under
        # `root` (the image's bind).
        at = {name: root + "/" + image_path(image, name, True) for name in IMAGE_DIRS}
        at.update({name: root + "/" + image_path(image, name, False) for name in IMAGE_FILES})
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount(image, root, None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        mount(None, root, None, flags)
        for name, source in self.config.get("etc_files", {}).items():
            mount(source, at["etc/" + name], None, MS_BIND)
        if os.path.isfile("/etc/resolv.conf"):
            mount("/etc/resolv.conf", at["etc/resolv.conf"], None, MS_BIND)
        mount("/sys", at["sys"], None, MS_BIND | MS_REC)
        make_dev(at["dev"])
        # Made in /dev's tmpfs (the image is read-only), unlinked there once bound.
        bind_text(IMAGE_HOSTS + SANDBOX_HOSTS_LINE, at["etc/hosts"], at["dev"])
        make_tree_readonly(root)
        for path in self.config["masks"]:
            # Lamina's data directory is not in an image, but an image may have a directory
            # at its path: masked as in a zip function's sandbox, if it has one.
            with contextlib.suppress(OSError):
                target = root + "/" + image_path(root, path, True)
                mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k")
        mount("proc", at["proc"], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount(
            "tmpfs",
            at["tmp"],
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"size={DEFAULT_TMP_MB}m,mode=1777",
        )

    def be_init(self, runtime: int) -> None:
        """PID 1 of the sandbox: reap orphans until the runtime exits, then exit as it did.

        The runtime is not PID 1 itself, as it is not on Lambda: a PID 1 ignores signals it
        sends itself (a handler's `os.kill(os.getpid(), SIGKILL)` would do nothing) and
        inherits every orphan to reap. Forking this init happens in the pool, off the
        request path. Its exit status carries the runtime's: the code for a normal exit,
        128 + N for death by signal N (the shell's convention, read back by the server).
        """
        self.ctl.close()  # the runtime alone holds it: its close is the server's signal
        uid, gid = int(self.config["uid"]), int(self.config["gid"])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # In an image's root only a static init runs (a dynamic one would load the image's
        # C library, if it has one). The native init holds some 50 KB where this process
        # holds ~1.7 MB of pages it alone has left (see `_native_init`); the seccomp filter,
        # no_new_privs and the parent-death signal stay.
        native = _INIT_FD >= 0 and (self.image is None or self.config.get("init_static"))
        run_init(runtime, _INIT_FD if native else -1)

    def attach(self, claim: dict[str, Any], fds: list[int]) -> None:
        """A function claimed this sandbox: its files, then the point of no return.

        `fds`: stdout/stderr, the extensions' stdout/stderr (if it has extensions), then
        for a zip function detached mount trees for /var/task, /opt (if the function has
        layers), /var/runtime (for exec'd runtimes) and /var/lang (a managed runtime's
        image), in that order; for a container image, none (its root has its files).
        """
        output, rest = fds[0], fds[1:]
        if claim.get("snapshot"):
            self.template_ctl, rest = socket.socket(fileno=rest[-1]), rest[:-1]
        if claim.get("extensions"):
            self.extension_output, rest = rest[0], rest[1:]
        trees = iter(rest)
        if claim.get("task"):
            attach_tree(next(trees), "/var/task")
        if claim.get("opt"):
            attach_tree(next(trees), "/opt")
        if claim.get("runtime_dir"):
            attach_tree(next(trees), "/var/runtime")
        if claim.get("lang"):
            attach_tree(next(trees), "/var/lang")
        tmp_mb = int(claim["tmp_mb"])
        if tmp_mb != DEFAULT_TMP_MB:
            mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={tmp_mb}m")
        seccomp.install(_TEMPLATE_CLAIM_FILTER if self.template else _CLAIM_FILTER)
        os.chdir(claim.get("cwd") or "/var/task")  # (an OSError names a missing one)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(null)
        os.close(output)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.nice:
            # The normal priority back (only root may lower a nice value), before the
            # function's code runs.
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        uid, gid = int(self.config["uid"]), int(self.config["gid"])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        # Credential changes clear the parent-death signal: set it again.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def launch_extensions(self, paths: list[str], env: dict[str, str]) -> None:
        """Start each external extension as Lambda does, before the runtime: a process of
        the sandbox (orphaned to its init, which reaps it), its output on the extensions'
        pipe, which the runtime does not keep (so its end of file means they are all gone).
        Then wait for the server's go: the extensions have registered."""
        out = self.extension_output
        for path in paths:
            pid = os.fork()
            if pid == 0:
                try:
                    if os.fork() == 0:
                        os.dup2(out, 1)
                        os.dup2(out, 2)
                        os.execve(path, [path], env)
                except BaseException as e:
                    with contextlib.suppress(OSError):
                        os.write(out, f"lamina: extension {path} failed to start: {e}\n".encode())
                os._exit(0)
            os.waitpid(pid, 0)
        os.close(out)
        send(self.ctl, {"launched": len(paths)})
        go, fds = receive(self.ctl)
        for fd in fds:
            os.close(fd)
        if go is None:
            os._exit(0)  # the server gave up on this sandbox

    def hand_over(self, claim: dict[str, Any]) -> int:
        env = claim["env"]
        argv = claim["argv"]
        if claim.get("extensions"):
            self.launch_extensions(claim["extensions"], env)
        if not self.config.get("python") or self.image is not None:
            try:
                execute(argv, env)
            except OSError as e:
                e.filename = argv[0]
                raise
        self.ctl.close()  # the server reads the hand-over from this close
        if self.template_ctl is not None:
            copies = snapshot.IsolatedCopies(
                int(self.config["uid"]),
                int(self.config["gid"]),
                _COPY_FILTER,
                _INIT_FD,
            )
            template_ctl = self.template_ctl
            _BOOTSTRAP.snapshot_point = lambda: snapshot.serve(
                template_ctl, copies.fork, copies.become
            )
        os.environ.clear()
        os.environ.update(env)
        extra = [p for p in env.get("PYTHONPATH", "").split(":") if p]
        sys.path[:] = [*extra, *_BASE_PATH]
        sys.argv = [argv[-1]]
        try:
            _BOOTSTRAP.main()
            return 0
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()


def make_dev(dev: str) -> None:
    """A /dev of the harmless devices only (bound from the host's), on a tmpfs of its own."""
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "size=64k,mode=755")
    for name in DEVICES:
        with open(f"{dev}/{name}", "w"):
            pass
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")


def execute(argv: list[str], env: dict[str, str]) -> None:
    """execve() `argv` with `env`, as execvp(3) does: an `argv[0]` without a "/" is looked
    for in the PATH of `env` (`DEFAULT_PATH` without one; an empty entry is the working
    directory). A directory where it cannot be executed (EACCES) is passed over, and is the
    error if no other has it; ENOENT otherwise. Returns only by raising."""
    name = argv[0] if argv else ""
    if not name or "/" in name:
        os.execve(name, argv, env)
    denied: OSError | None = None
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), argv, env)
        except OSError as e:
            if e.errno == errno.EACCES:
                denied = denied or e
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV):
                raise
    if denied is not None:
        raise denied
    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)


# -- the zygote --------------------------------------------------------------------------

_FILTER = b""
_CLAIM_FILTER = b""
#: a SnapStart template's filters (`_lamina_snapshot.py`): in the pool, the pool's but for
#: `unshare` and `mount` (`COPY_SYSCALLS`); at claim, the claim's but for `mount`; and what
#: each copy installs once isolated, which makes its whole filter a normal sandbox's
_TEMPLATE_FILTER = b""
_TEMPLATE_CLAIM_FILTER = b""
_COPY_FILTER = b""
#: what attaching a claimed function's files needs; denied by the filter installed at claim
CLAIM_SYSCALLS = ("mount", "mount_setattr", "move_mount")
#: what a SnapStart template's copies need to isolate themselves (`_lamina_snapshot.py`),
#: allowed in the template and denied by the filter each copy installs once isolated
COPY_SYSCALLS = ("mount", "unshare")
_BASE_PATH: list[str] = []
_BOOTSTRAP: Any = None
#: the native init (`init.c`, built by the server), opened; -1: the Python init
_INIT_FD = -1


class Zygote:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.config: dict[str, Any] = {}
        self.children: set[int] = set()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def init(self) -> None:
        global _FILTER, _CLAIM_FILTER, _BOOTSTRAP, _INIT_FD
        global _TEMPLATE_FILTER, _TEMPLATE_CLAIM_FILTER, _COPY_FILTER
        message, _ = receive(self.sock)
        if message is None:
            sys.exit(0)
        self.config = message
        # Most of the deny-list goes on in the pool, ahead of any claim; the claim itself
        # installs only the few syscalls it still needs to attach the function's files
        # (installing a filter costs in proportion to its length, ~0.1 ms for the whole list).
        _FILTER = seccomp.build_filter(deny=[n for n in seccomp.DENIED if n not in CLAIM_SYSCALLS])
        _CLAIM_FILTER = seccomp.build_filter(deny=CLAIM_SYSCALLS, arguments=False)
        if message.get("python"):
            pool = [n for n in seccomp.DENIED if n not in (*CLAIM_SYSCALLS, *COPY_SYSCALLS)]
            _TEMPLATE_FILTER = seccomp.build_filter(deny=pool)
            _TEMPLATE_CLAIM_FILTER = seccomp.build_filter(
                deny=[n for n in CLAIM_SYSCALLS if n != "mount"], arguments=False
            )
            _COPY_FILTER = seccomp.build_filter(deny=COPY_SYSCALLS, arguments=False)
        if message.get("python"):
            # The runtime bootstrap and the standard modules handlers use most, imported once
            # here and shared by every child.
            sys.path.insert(0, message["runtime_dir"])
            import bootstrap  # type: ignore[import-not-found]

            _BOOTSTRAP = bootstrap
            for name in message.get("preload", []):
                with contextlib.suppress(ImportError):
                    __import__(name)
            del sys.path[0]
        init = message.get("init")
        if init:
            # Opened now, close-on-exec (an exec'd runtime does not keep it; a Python one
            # closes it when it isolates): each sandbox's init execs it by descriptor.
            with contextlib.suppress(OSError):
                _INIT_FD = os.open(init, os.O_RDONLY | os.O_CLOEXEC)
        here = os.path.dirname(os.path.abspath(__file__))
        _BASE_PATH[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
        gc.collect()
        gc.freeze()
        send(self.sock, {"ok": True, "pid": os.getpid(), "python": sys.version.split()[0]})

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    self.reap()
                else:
                    message, fds = receive(self.sock)
                    if message is None:
                        self.shutdown()
                    else:
                        self.handle(message, fds)

    def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        if message.get("op") != "spawn":
            for fd in fds:
                os.close(fd)
            return
        ctl = socket.socket(fileno=fds[0])
        netns = fds[1]
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        try:
            pid = clone(flags)
        except OSError as e:
            ctl.close()
            os.close(netns)
            send(self.sock, {"op": "spawned", "id": message["id"], "error": str(e)})
            return
        if pid == 0:
            self.in_child()
            nice = int(message.get("nice", 0))
            template = bool(message.get("template"))
            child = Child(self.config, ctl, netns, nice, message.get("image"), template)
            child.run(message.get("cgroups", []))
        self.children.add(pid)
        ctl.close()
        os.close(netns)
        send(self.sock, {"op": "spawned", "id": message["id"], "pid": pid})

    def in_child(self) -> None:
        """Drop what belongs to the zygote: its signal wiring and descriptors."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.sock.close()

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            send(self.sock, {"op": "exit", "pid": pid, "status": code})

    def shutdown(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sys.exit(0)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        sys.exit(1)  # the server died before we could ask to die with it
    zygote = Zygote(sock)
    zygote.init()
    zygote.serve()


if __name__ == "__main__":
    main()
