"""The `namespace` backend: each environment isolated by the kernel, started by a zygote.

An environment is a child of a warm zygote (`_zygotes.py`, `zygote/zygote.py`) made with new
mount, PID, IPC and UTS namespaces, joined to a network namespace of its own (`_netns.py`) and
to a cgroup of its own (`_cgroups.py`). Its root is an empty tmpfs holding, read-only, the
host's system directories (/usr, /etc, /bin, /lib...) with Lambda's own user database over
/etc/passwd and /etc/group (the sandbox user `sbx_user1051`), a /dev of harmless devices, and
Lambda's places: the function's code at /var/task, its layers at /opt, the runtime at
/var/runtime, the runtime image (interpreter links, bundled SDK) at /var/lang, a private tmpfs
/tmp of `EphemeralStorage` MB. Its init is PID 1; its runtime runs as an unprivileged uid
with no_new_privs and a seccomp deny-list.

Cold starts are cheap because the isolation is done *ahead*: for each zygote a few children
wait, already isolated (namespaces, root, pivot_root, most of the seccomp filter), in a pool
(`_pool.py`: `--warm-pool` at rest, up to `POOL_GROWTH` times that while cold starts come in
bursts; refilled after the cold start that drew on it, several children at once). A cold
start claims one: the server hands it the function's files as detached mount trees
(open_tree), the child attaches them, drops its privileges and runs the handler's import. A
claim that finds the pool dry waits for the next child made (some milliseconds more).

Container-image functions (`SandboxSpec.image_root`, see `api.py`): the child's root is the
image's unpacked root filesystem, bound read-only, with the same /proc, /dev, /sys, /tmp and
user database over it, and nothing of the host's system directories; the claim attaches no
trees, and the image's entry point is exec'd. Those children come from the exec zygote (the
host's Python: the zygote itself never runs on the image's files) in a pool of their own per
image, made ahead as a runtime's are, so that a cold start costs what a custom runtime's does.

Memory: the cgroup's hard limit is MemorySize + the /tmp size (tmpfs pages are charged to the
writer's cgroup; on Lambda /tmp is apart from memory), and a watcher kills an environment whose
own anonymous memory passes MemorySize — reported as Runtime.OutOfMemory either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import pwd
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from lamina.sandbox._cgroups import MB, Cgroup, CgroupTree
from lamina.sandbox._egress import EgressPolicy as EgressPolicy
from lamina.sandbox._native_init import native_init
from lamina.sandbox._netns import RUNTIME_API_PORT, NetNamespace, NetworkFactory
from lamina.sandbox._pool import PreparedPool
from lamina.sandbox._signals import signal_main_thread
from lamina.sandbox._zygotes import Zygote, ZygoteError, close_fd, send
from lamina.sandbox.api import (
    SNAPSHOT_UNSUPPORTED,
    ExitCallback,
    ExitWatch,
    RuntimeApiEndpoint,
    RuntimeSpec,
    SandboxError,
    SandboxSpec,
    Template,
)

log = logging.getLogger(__name__)

MEMORY_POLL_S = 0.1
#: connections one sandbox may have open to Lamina's API at once (through its relay)
RELAY_CONNECTIONS = 64
_REFILL_AFTER_INIT_S = 0.005
_REFILL_FALLBACK_S = 0.5
#: a pool grows up to this many times `--warm-pool` while cold starts come in bursts
POOL_GROWTH = 8
#: the nice value a child made for the pool isolates itself at (0 again once claimed)
POOL_NICE = 10
#: Lambda's sandbox user is sbx_user1051, uid 993 / gid 990
SANDBOX_UID, SANDBOX_GID = 993, 990
NOBODY = 65534
#: standard modules a Python zygote imports ahead (handlers use them; children share them)
PRELOAD = (
    "base64",
    "datetime",
    "hashlib",
    "http.client",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "email.message",
)
#: a zygote's key: its interpreter, whether it runs Python in-process, what it exposes
_ZygoteKey = tuple[str, bool, tuple[str, ...]]
#: a pool's key: its zygote's, and the container image its children show as / ("": none)
_Key = tuple[str, bool, tuple[str, ...], str]
#: as `zygote.SYSTEM_DIRS`: what the sandbox's root shows of the host
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")


def available() -> str | None:
    """Why the namespace backend cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (namespaces, cgroups and mounts)"
    try:
        os.close(open_tree(Path("/")))
    except OSError as e:
        return f"needs Linux 5.12 or newer (open_tree, mount_setattr): {e}"
    try:
        CgroupTree.probe()
    except OSError as e:
        return str(e)
    return None


@dataclass(eq=False)
class _Prepared:
    """A child of a zygote, isolated and waiting to be claimed."""

    zygote: Zygote
    pid: int
    pidfd: int
    ctl: socket.socket
    netns: NetNamespace
    cgroup: Cgroup
    sandbox_id: str
    exit: ExitWatch = field(default_factory=ExitWatch)
    #: the pool it was taken from
    key: _Key = ("", False, (), "")
    #: the CPU priority it was made at (not 0: made for the pool)
    nice: int = 0
    #: the host pid of the process that will run the runtime (the init's first child)
    runtime_pid: int = 0


class NamespaceSandbox:
    def __init__(self, spec: SandboxSpec, backend: NamespaceBackend) -> None:
        self._spec = spec
        self._backend = backend
        self._child: _Prepared | None = None
        self._exit = ExitWatch()
        self._oom = False
        #: frozen (idle): its memory stands still, so the memory watch skips it
        self._frozen = False
        self._relays: list[asyncio.AbstractServer] = []
        self._destroyed = False
        #: a template's control socket (ours), once claimed (see `_ns_templates`)
        self._template_sock: socket.socket | None = None

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def scratch_dir(self) -> Path:
        return Path("/tmp")

    @property
    def out_of_memory(self) -> bool:
        return self._oom

    async def prepare(self) -> RuntimeApiEndpoint:
        if self._spec.snapshot:
            child = await self._backend.spawn_template(self._spec)
        else:
            child = await self._backend.claim(self._spec)
        self._child = child
        child.exit.on_exit(self._exited)
        return RuntimeApiEndpoint(child.netns.runtime_api, f"127.0.0.1:{RUNTIME_API_PORT}")

    async def connect(self, port: int) -> socket.socket:
        child = self._child
        if child is None or child.netns.closed:
            raise OSError(f"sandbox {self.id} has no network namespace")
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, self._backend.net.socket_in, child.netns)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        child = self._child
        if child is None:
            raise SandboxError("start() before prepare()")
        spec = self._spec
        loop = asyncio.get_running_loop()
        template_socks: tuple[socket.socket, socket.socket] | None = None
        try:
            await self._configure(child)
            claim: dict[str, Any] = {
                "env": dict(env),
                "argv": list(spec.argv),
                "cwd": spec.working_dir or "/var/task",
                "tmp_mb": spec.ephemeral_storage_mb,
                "extensions": list(spec.extensions),
            }
            outputs = [spec.output_fd]
            if spec.extensions and spec.extension_output_fd is not None:
                outputs.append(spec.extension_output_fd)
            trees: list[int] = []
            try:
                if spec.image_root is None:
                    # (An image's root has its own files at those places: nothing attached.)
                    claim.update(_function_trees(spec, trees))
                if child.nice:
                    # Made for the pool at a low priority: the runtime wakes up to this claim
                    # at the normal one (it takes it back itself too, before the function
                    # runs), and so does the sandbox's init.
                    for pid in (child.runtime_pid, child.pid):
                        if pid > 0:  # (0 would be this server itself)
                            with contextlib.suppress(OSError):
                                os.setpriority(os.PRIO_PROCESS, pid, 0)
                extra = []
                if spec.snapshot:
                    # A template: its control socket goes last (see `_ns_templates`).
                    claim["snapshot"] = True
                    template_socks = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    extra.append(template_socks[1].fileno())
                send(child.ctl, claim, [*outputs, *trees, *extra])
            finally:
                for tree in trees:
                    os.close(tree)
                if template_socks is not None:
                    template_socks[1].close()
                    self._template_sock = template_socks[0]
            # Serve the relay to Lamina's API while the child attaches (connections made
            # before then wait in the listening socket's backlog).
            await self._serve_relays(child)
            answer = await loop.sock_recv(child.ctl, 1 << 16)
            if answer and b'"launched"' in answer:
                # The extensions run; the runtime starts once they have registered.
                if extensions_started is not None:
                    await extensions_started()
                await loop.sock_sendall(child.ctl, b'{"go": true}')
                answer = await loop.sock_recv(child.ctl, 1 << 16)
        except OSError as e:
            raise SandboxError(f"sandbox {self.id}: {e}") from e
        if answer:
            problem = json.loads(answer)
            cause = OSError(
                problem.get("errno") or 0, problem.get("error", "?"), problem.get("filename")
            )
            if problem.get("filename"):
                cause.strerror = os.strerror(problem["errno"]) if problem.get("errno") else ""
            raise SandboxError(f"sandbox {self.id}: {problem.get('error')}") from cause
        self._backend.watch_memory(self)

    async def _configure(self, child: _Prepared) -> None:
        """The function's limits and network on a sandbox made before it was known."""
        spec = self._spec
        loop = asyncio.get_running_loop()
        # CPU is limited once the init phase is over (`init_done`): Lambda lets the init
        # phase run at full speed, and at 128 MB (7% of a CPU) an import would crawl.
        child.cgroup.limit_memory(spec.memory_mb, spec.ephemeral_storage_mb)
        if not spec.network:
            # No network: not even a listener at AWS_ENDPOINT_URL (connections would
            # wait, unserved, in its backlog); refused at once instead.
            if child.netns.api_relay is not None:
                child.netns.api_relay.close()
                child.netns.api_relay = None
            for extra in child.netns.extra_relays.values():
                extra.close()
            child.netns.extra_relays.clear()
            if child.netns.veth is not None:
                await loop.run_in_executor(None, self._backend.net.drop_egress, child.netns)
        elif spec.vpc is not None and child.netns.veth is not None:
            # Made before its function was known: it joins the VPC now, before any of
            # the function's code runs.
            await loop.run_in_executor(None, self._backend.net.join_vpc, child.netns, spec.vpc)

    async def _serve_relays(self, child: _Prepared) -> None:
        relay = child.netns.api_relay
        if self._spec.network and relay is not None:
            self._relays.append(await self._backend.serve_relay(relay))
        if self._spec.network:
            for port, listener in child.netns.extra_relays.items():
                self._relays.append(await self._backend.serve_relay(listener, port))

    def terminate(self) -> None:
        # The sandbox's init ignores SIGTERM (it is a PID namespace's init without a
        # handler): the runtime is its first child, forked before any extension.
        child = self._child
        if child is None or child.exit.status is not None:
            return
        try:
            with open(f"/proc/{child.pid}/task/{child.pid}/children") as f:
                first = f.read().split()[:1]
            if first:
                signal_main_thread(int(first[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass  # gone already, or a kernel without the children file: killed later

    def init_done(self) -> None:
        child = self._child
        if child is None:
            return
        if child.exit.status is None:
            with contextlib.suppress(OSError):
                child.cgroup.limit_cpu(self._spec.memory_mb)
        self._backend.refill_after_init(child.key)

    def freeze(self) -> None:
        child = self._child
        if child is not None and child.exit.status is None:
            # A last look at its memory: frozen, it cannot grow, and the watch (ten reads a
            # second per environment, the server's main cost at rest beside a thousand idle
            # ones) leaves it alone until it is thawed. The cgroup's hard limit holds anyway.
            self.check_memory()
            if self._oom:
                return  # killed: a v1-frozen task would not die
            child.cgroup.freeze()
            self._frozen = child.cgroup.can_freeze

    def thaw(self) -> None:
        self._frozen = False
        child = self._child
        if child is not None:
            child.cgroup.thaw()

    def check_memory(self) -> None:
        child = self._child
        if child is None or self._oom or self._frozen or child.exit.status is not None:
            return
        limit = self._spec.memory_mb * MB
        if child.cgroup.usage_bytes() > limit and child.cgroup.anon_bytes() > limit:
            self._oom = True
            self._kill()

    @property
    def finished(self) -> bool:
        return self._destroyed or self._exit.status is not None

    def _exited(self, status: int) -> None:
        # The sandbox's init exits 128 + N when the runtime died of signal N.
        if status > 128:
            status = 128 - status
        child = self._child
        if child is not None and child.cgroup.oom_kills() > 0:
            self._oom = True
        self._exit.exited(status)

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit.on_exit(callback)

    def memory_peak_mb(self) -> int:
        child = self._child
        return -(-child.cgroup.function_peak_bytes() // MB) if child is not None else 0

    def memory_usage_mb(self) -> int | None:
        # The cgroup's usage: what its processes hold privately, its /tmp and the file pages
        # charged to it (pages shared with the zygote are charged to the zygote's).
        child = self._child
        if child is None or child.exit.status is not None:
            return None
        return -(-child.cgroup.usage_bytes() // MB)

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.exit.status is None:
            # A task frozen by the v1 freezer does not die until it is thawed.
            child.cgroup.thaw()
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)

    async def destroy(self) -> None:
        self._destroyed = True
        if self._template_sock is not None:  # a template that never got to its snapshot
            self._template_sock.close()
            self._template_sock = None
        for server in self._relays:
            server.close()
        child = self._child
        if child is None:
            return
        self._kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(child.exit.done), 10)
        await self._backend.release(child)

    async def snapshotted(self) -> Template:
        from lamina.sandbox._ns_templates import wait_template

        sock, self._template_sock = self._template_sock, None
        if sock is None:
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        return await wait_template(self, sock, self._exit.done)


class NamespaceBackend:
    name = "namespace"
    lambda_paths = True

    def __init__(
        self,
        root: Path,
        data_dir: Path,
        api_address: tuple[str, int],
        warm_pool: int = 2,
        egress: EgressPolicy | None = None,
        relay_ports: tuple[int, ...] = (),
        relay_to: tuple[str, int] | None = None,
        init_dir: Path | None = None,
    ) -> None:
        """`api_address`: Lamina's API as the host reaches it (its port is also where
        `AWS_ENDPOINT_URL` points inside a sandbox); `relay_to`: where the relay takes a
        sandbox's connections to it (the server's sandbox listener; default `api_address`);
        `init_dir`: where the sandboxes' native init is built (`_native_init`)."""
        self._root = root
        self._staging = root / "root"
        self._data_dir = data_dir.resolve()
        self._api_address = api_address
        self._relay_to = relay_to or api_address
        self._warm_pool = warm_pool
        # Grown with the demand a pool sees (see `_pool.py`), up to this many per zygote.
        self._pool_max = warm_pool * POOL_GROWTH
        self.cgroups = CgroupTree.create()
        # Lamina's API, and loopback services functions are pointed at (`--aws-endpoint`),
        # relayed from the sandbox's own loopback to the host's.
        self.net = NetworkFactory(api_address[1], egress, relay_ports)
        self.net.setup()
        self._staging.mkdir(parents=True, exist_ok=True)
        self._uid, self._gid = _sandbox_ids()
        self._etc_files = write_user_database(root / "etc", self._uid, self._gid)
        #: the sandboxes' native init, built once into `init_dir` (None: their Python init)
        self._init = native_init(init_dir or root / "bin")
        self._zygotes: dict[_ZygoteKey, Zygote] = {}
        self._keys: dict[tuple[str, bool, Path, Path | None, Path | None], _Key] = {}
        self._pools: dict[_Key, PreparedPool[_Prepared]] = {}
        self._live: set[NamespaceSandbox] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._seq = 0

    @property
    def description(self) -> str:
        firewall = self.net.firewall
        egress = f"egress, table inet {firewall.table}" if firewall else "loopback only"
        return f"namespace (cgroups {self.cgroups.versions}; network {egress})"

    def create(self, spec: SandboxSpec) -> NamespaceSandbox:
        if spec.snapshot and not self.can_snapshot(spec):
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        return NamespaceSandbox(spec, self)

    def start(self) -> None:
        pass

    def can_snapshot(self, spec: SandboxSpec) -> bool:
        # The Python bootstrap in a zygote's child: its copies are forks (`_ns_templates`).
        return spec.python_in_zygote and spec.image_root is None and not spec.extensions

    def expect(self, runtimes: Sequence[RuntimeSpec]) -> None:
        """Start the zygotes of these runtimes and fill their pools (in the background).
        Pools of container images no longer named keep nothing ready (see `api.py`)."""
        images = set()
        for spec in runtimes:
            key = self._zygote_of(spec)
            pool = self._pools[key]
            if spec.image_root is not None:
                images.add(key)
                pool.base = self._warm_pool
            pool.refill()
        for key, pool in self._pools.items():
            if key[3] and key not in images and pool.base:
                # The release of what it holds ready, not a close: a function of that image
                # may yet start (a claim then makes its child).
                pool.base = 0
                pool.refill()

    # -- zygotes and the pool --------------------------------------------------------------

    def _zygote(
        self,
        runtime: str,
        python: bool,
        runtime_dir: Path,
        lang_dir: Path | None = None,
        image_root: Path | None = None,
    ) -> _Key:
        """The pool for a runtime or a container image (made if need be, with its zygote),
        by its key.

        A Python runtime's zygote is its own interpreter, running the bootstrap in-process;
        other runtimes share an "exec" zygote (the host's Python) whose children exec them,
        one per set of directories to expose (a runtime installed outside the system
        directories, such as pyenv's or nvm's under /root). Container images share the
        plain exec zygote, with a pool per image: its children are made with the image as
        their root.
        """
        asked = (runtime, python, runtime_dir, lang_dir, image_root)
        key = self._keys.get(asked)
        if key is not None:
            return key  # (resolving the runtime's path costs tens of µs: once per runtime)
        if image_root is not None:
            key = (exec_interpreter(), False, (), str(image_root))
        else:
            expose = _expose(str(Path(runtime).resolve().parent.parent)) if runtime else []
            interpreter = runtime if python else exec_interpreter()
            key = (interpreter, python, tuple(expose), "")
        self._keys[asked] = key
        if key not in self._pools:
            zygote = self._make_zygote(key[:3], runtime_dir, lang_dir)
            image = key[3] or None
            self._pools[key] = PreparedPool(
                f"{zygote.interpreter} ({image})" if image else zygote.interpreter,
                partial(self._spawn, zygote, image),
                self.release,
                _alive,
                self._warm_pool,
                self._pool_max,
            )
        return key

    def _make_zygote(self, zkey: _ZygoteKey, runtime_dir: Path, lang_dir: Path | None) -> Zygote:
        """The zygote for `zkey` (made now if need be; it starts with its first child)."""
        interpreter, python, expose = zkey
        if zkey not in self._zygotes:
            config: dict[str, Any] = {
                "staging": str(self._staging),
                "etc_files": self._etc_files,
                "masks": [str(self._data_dir)],
                "expose": list(expose),
                "uid": self._uid,
                "gid": self._gid,
                "python": python,
                "init": self._init.path if self._init else None,
                "init_static": bool(self._init and self._init.static),
            }
            if python:
                config["runtime_dir"] = str(runtime_dir)
                # Where the runtime finds the Runtime API in every sandbox: its pooled
                # children connect ahead of the claim (see the bootstrap's `preconnect`).
                config["runtime_api"] = f"127.0.0.1:{RUNTIME_API_PORT}"
                config["preload"] = list(PRELOAD)
                if lang_dir is not None and lang_dir.is_dir():
                    # A Python zygote serves one runtime: its image is bound at /var/lang in
                    # the pool, ahead of any claim (a bind shows the SDK installed later too).
                    config["lang_dir"] = str(lang_dir)
            self._zygotes[zkey] = Zygote(interpreter, config)
        return self._zygotes[zkey]

    def _zygote_of(self, spec: RuntimeSpec | SandboxSpec) -> _Key:
        return self._zygote(
            spec.interpreter,
            spec.python_in_zygote,
            spec.runtime_dir,
            spec.lang_dir,
            spec.image_root,
        )

    async def claim(self, spec: SandboxSpec) -> _Prepared:
        key = self._zygote_of(spec)
        pool = self._pools[key]
        try:
            child = await pool.claim()
        except (OSError, ZygoteError) as e:
            raise SandboxError(f"cannot make a sandbox: {e}") from e
        # Refill once this cold start is over (`refill_after_init`; here too, in case its
        # init never ends): on a small machine a refill would otherwise take the CPU from
        # the very cold start that drew on the pool.
        asyncio.get_running_loop().call_later(_REFILL_FALLBACK_S, pool.refill)
        child.key = key
        return child

    async def spawn_template(self, spec: SandboxSpec) -> _Prepared:
        """A child made for a SnapStart template (never pooled: its seccomp filter is not a
        pooled child's, see `_ns_templates`)."""
        key = self._zygote_of(spec)
        zygote = self._zygotes[key[:3]]
        try:
            return await self._spawn(zygote, None, template=True)
        except (OSError, ZygoteError) as e:
            raise SandboxError(f"cannot make a sandbox: {e}") from e

    def refill_after_init(self, key: _Key) -> None:
        pool = self._pools.get(key)
        if pool is not None and not self._closing:
            asyncio.get_running_loop().call_later(_REFILL_AFTER_INIT_S, pool.refill)

    async def _spawn(
        self, zygote: Zygote, image: str | None, urgent: bool = True, template: bool = False
    ) -> _Prepared:
        """A new isolated child (with `image` as its root, if given); made for the pool (not
        `urgent`), it isolates itself at a low CPU priority and takes the normal one back
        when claimed (see `_pool.py`)."""
        loop = asyncio.get_running_loop()
        self._seq += 1
        sandbox_id = f"e{os.getpid()}-{self._seq}"
        # A network namespace of its own (with its veth) and a cgroup, made now, ahead of the
        # claim, side by side (each is mostly waiting in the kernel).
        made = await asyncio.gather(
            loop.run_in_executor(None, self.net.make, True),
            loop.run_in_executor(None, self.cgroups.make, sandbox_id),
            return_exceptions=True,
        )
        netns, cgroup = made
        if isinstance(netns, BaseException) or isinstance(cgroup, BaseException):
            if isinstance(netns, NetNamespace):
                netns.close()
                self.net.forget(netns)
            if isinstance(cgroup, Cgroup):
                await loop.run_in_executor(None, cgroup.remove)
            raise netns if isinstance(netns, BaseException) else cast(BaseException, cgroup)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        nice = 0 if urgent else POOL_NICE
        try:
            pid = await zygote.spawn(
                cgroup.procs_files, theirs.fileno(), netns.fd, nice, image, template
            )
        except BaseException:
            ours.close()
            netns.close()
            self.net.forget(netns)
            loop.run_in_executor(None, cgroup.remove)
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        pidfd = os.pidfd_open(pid)
        child = _Prepared(zygote, pid, pidfd, ours, netns, cgroup, sandbox_id, nice=nice)
        zygote.watch(pid, child.exit.exited)
        ready = await loop.sock_recv(ours, 1 << 16)
        if not ready or b'"ready"' not in ready:
            await self.release(child)
            raise SandboxError(f"sandbox failed to isolate: {_problem(ready)}")
        child.runtime_pid = _first_child(pid)
        return child

    async def release(self, child: _Prepared) -> None:
        """Kill what is left of a child and free its namespace and cgroup."""
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, child.cgroup.kill_all)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(child.exit.done), 10)
        child.ctl.close()
        close_fd(child.pidfd)
        child.netns.close()
        self.net.forget(child.netns)
        # Here, on the loop that reads and writes them: closed by the thread that removes the
        # cgroup, a descriptor could be reused under a read on the loop.
        child.cgroup.close_files()
        await loop.run_in_executor(None, child.cgroup.remove)

    # -- the relay to Lamina's API ---------------------------------------------------------

    async def serve_relay(
        self, listener: socket.socket, port: int | None = None
    ) -> asyncio.AbstractServer:
        """Relay connections to AWS_ENDPOINT_URL inside a sandbox to Lamina's API (or, with
        `port`, to that port of the host's loopback), at most `RELAY_CONNECTIONS` at a time
        (each costs the server two descriptors). Lamina's go to the server's sandbox
        listener, so that Lamina knows them for a sandbox's by the socket they arrive on
        (nothing in the request, which a function could forge)."""
        if port is None:
            host, port = self._relay_to
        else:
            host = "127.0.0.1"
        open_now = 0

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal open_now
            if open_now >= RELAY_CONNECTIONS:
                writer.close()
                return
            open_now += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.close()
                open_now -= 1
                return
            try:
                await asyncio.gather(
                    _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
                )
            finally:
                open_now -= 1

        return await asyncio.start_server(relay, sock=listener)

    # -- memory ----------------------------------------------------------------------------

    def watch_memory(self, sandbox: NamespaceSandbox) -> None:
        self._live.add(sandbox)
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch_memory())

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_POLL_S)
            live = [s for s in self._live if not s.finished]
            self._live = set(live)
            # On the loop: each check is one pread() of a control file kept open (~1.5 us, a
            # read of kernel memory that never waits for a disk). In a worker thread, each read
            # made the thread hand the GIL back and forth with the event loop's thread, several
            # hundred times a second, which cost the invoke path more than the reads do.
            _check_all(live)

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.gather(*(p.close() for p in self._pools.values()), return_exceptions=True)
        for zygote in self._zygotes.values():
            await zygote.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.cgroups.remove)
        await loop.run_in_executor(None, self.net.close)


_libc = ctypes.CDLL(None, use_errno=True)
_NR_OPEN_TREE = 428  # the same on x86_64 and aarch64
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_AT_RECURSIVE = 0x8000


def open_tree(path: Path) -> int:
    """A detached copy of the mount tree at `path` (in the server's mount namespace), which
    a sandbox attaches where it wants with move_mount(): the way to hand files to a process
    that has already left the host's filesystem."""
    flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE
    fd = int(_libc.syscall(_NR_OPEN_TREE, -100, str(path).encode(), flags))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}", str(path))
    return fd


def _function_trees(spec: SandboxSpec, trees: list[int]) -> dict[str, Any]:
    """Open, into `trees` (which the caller closes), the detached trees a zip function's
    claim attaches, in the child's order (`Child.attach`); returns what the claim says of
    them."""
    claim: dict[str, Any] = {"task": str(spec.task_root)}
    trees.append(open_tree(spec.task_root))
    if spec.opt_dir:
        claim["opt"] = str(spec.opt_dir)
        trees.append(open_tree(spec.opt_dir))
    if not spec.python_in_zygote:
        claim["runtime_dir"] = str(spec.runtime_dir)
        trees.append(open_tree(spec.runtime_dir))
    # A Python zygote's children have the image already (see `_zygote`); an exec'd
    # runtime's get it now.
    if spec.lang_dir is not None and not spec.python_in_zygote:
        claim["lang"] = str(spec.lang_dir)
        trees.append(open_tree(spec.lang_dir))
    return claim


def _problem(answer: bytes) -> str:
    """What a child that failed to isolate reported (its error, naming the path at fault)."""
    try:
        problem = json.loads(answer)
    except ValueError:
        problem = None
    if isinstance(problem, dict) and problem.get("error"):
        return str(problem["error"])
    return answer.decode(errors="replace") or "it exited"


def _first_child(pid: int) -> int:
    """The host pid of a process's first child (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            first = f.read().split()[:1]
        return int(first[0]) if first else 0
    except (OSError, ValueError):
        return 0


def _alive(child: _Prepared) -> bool:
    return child.exit.status is None


def _check_all(sandboxes: list[NamespaceSandbox]) -> None:
    for sandbox in sandboxes:
        sandbox.check_memory()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def exec_interpreter() -> str:
    """The interpreter that runs the exec zygote: the host's own Python, never a shim."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return os.path.realpath(sys.executable)


#: Lambda's sandbox user, and where its home directory is said to be (it does not exist on
#: Lambda either; HOME is not set there: lookups go through the user database)
SANDBOX_USER = "sbx_user1051"
SANDBOX_HOME = "/home/sbx_user1051"


def write_user_database(directory: Path, uid: int, gid: int) -> dict[str, str]:
    """The sandbox's /etc/passwd and /etc/group, as Lambda's: root, and the sandbox user
    under the uid/gid it runs as. Returns {name in /etc: file on the host}."""
    directory.mkdir(parents=True, exist_ok=True)
    passwd = "root:x:0:0:root:/root:/sbin/nologin\n"
    group = "root:x:0:\n"
    if uid != NOBODY:
        passwd += f"nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/sbin/nologin\n"
        group += f"nobody:x:{NOBODY}:\n"
    passwd += f"{SANDBOX_USER}:x:{uid}:{gid}::{SANDBOX_HOME}:/sbin/nologin\n"
    group += f"{SANDBOX_USER}:x:{gid}:\n"
    files = {}
    for name, text in (("passwd", passwd), ("group", group)):
        path = directory / name
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
        files[name] = str(path)
    return files


def _sandbox_ids() -> tuple[int, int]:
    """Lambda's uid/gid, unless this host already gives that uid to someone."""
    try:
        pwd.getpwuid(SANDBOX_UID)
    except KeyError:
        return SANDBOX_UID, SANDBOX_GID
    return NOBODY, NOBODY


def _expose(prefix: str) -> list[str]:
    """The runtime's installation, if the sandbox's system directories do not hold it."""
    top = Path(prefix).parts[1] if len(Path(prefix).parts) > 1 else ""
    return [] if top in _SYSTEM_DIRS else [prefix]
