"""The sandbox contract: what every execution-environment backend promises.

A *sandbox* is the isolation boundary of one execution environment and the runtime process
inside it. The scheduler owns sandboxes only through `SafeSandbox` (see `safe.py`), which
enforces the calling rules below so that backends need not.

Lifecycle: `backend.create(spec)` allocates nothing that blocks → `prepare()` makes (or takes
from a pool made ahead) the isolation and returns the listening socket of the environment's
Runtime API → `start(env)` launches the runtime (`spec.argv`) inside with that environment →
the runtime exits by itself or `destroy()` kills it.

Contract for backends:
- `prepare()` and `start()` are each called at most once, in that order. `prepare()` hands
  over a listening socket the caller serves the Runtime API on (and closes); its address is
  what the runtime will use, as the runtime sees it (`127.0.0.1:9001` inside a namespace).
- Extensions: when `spec.extensions` names executables, `start()` launches them first, in
  the sandbox and with the same environment, their stdout/stderr on
  `spec.extension_output_fd` (which only they hold: its end of file tells the caller they
  are all gone); then it awaits `extensions_started()` (the caller closes its copy of that
  descriptor, and returns once they have registered) before it launches the runtime.
- `connect(port)` gives a socket connected to `port` on the sandbox's own loopback (how
  Lamina reaches an extension's Telemetry API listener).
- `start()` returns once the runtime process exists (not when it is ready: readiness is the
  runtime's first `GET /invocation/next`). If the runtime's entry point cannot be executed,
  the `SandboxError` it raises has as `__cause__` an `OSError` whose `filename` is
  `spec.argv[0]`.
- `on_exit(callback)` registers a callback run on the event loop, once, when the runtime
  process has exited, with its wait status as `subprocess` reports it (negative = signal).
  A callback registered after the exit runs soon after registration.
- `destroy()` kills every process in the sandbox, waits until they are gone, and removes
  everything the sandbox created (its scratch directory included). A second `destroy()` is a
  no-op. `destroy()` never raises for a sandbox that is already gone.
- The scratch directory (the function's writable `/tmp`) belongs to the sandbox: the backend
  creates it before the runtime starts and removes it in `destroy()`. `create()` does no
  blocking I/O (it runs on the event loop); `prepare()` and `start()` do their blocking work
  off the loop.
- A backend enforces `spec.memory_mb` as well as it can (the process backend watches the
  runtime's resident memory; the namespace backend uses a cgroup) and, when it kills the
  runtime for it, sets `out_of_memory` before the exit callbacks run.
- `freeze()` stops every process of the sandbox where it stands, as Lambda freezes an
  environment between invocations; `thaw()` lets them run again. The caller freezes only an
  idle sandbox whose runtime is parked in `GET /invocation/next` (the request is sent; the
  answer waits for `thaw()`), and thaws before it answers. Both are cheap, never block and
  never raise; a backend that cannot freeze does nothing. `destroy()` works on a frozen
  sandbox (a backend thaws first where its kill needs it).
- The runtime starts with umask `RUNTIME_UMASK`, not the server's.
- A backend raises only `SandboxError` (wrapping the OS error that caused it).

Container-image functions (`spec.image_root`, an image's unpacked root filesystem):
- Only a backend that isolates a root filesystem runs them (`namespace`); another refuses
  the spec in `create()` with `SandboxError(IMAGE_NEEDS_NAMESPACE)`.
- The runtime sees `image_root` read-only as `/`, and of the host nothing but a fresh /proc,
  /sys (read-only), a /dev of harmless devices and the host's /etc/resolv.conf (it resolves
  names as the host does). Over the image's own files: Lambda's /etc/passwd and /etc/group
  (the sandbox user), and an /etc/hosts naming localhost and `sandbox.localdomain`. /tmp is
  a private tmpfs of `ephemeral_storage_mb`, the only writable place. Nothing is attached at
  /var/task, /opt, /var/runtime or /var/lang: `task_root`, `runtime_dir`, `lang_dir`,
  `opt_dir`, `interpreter` and `python_in_zygote` are ignored; the image's own files are
  there.
- The image must hold these mount points, directories dev, proc, sys, tmp, etc, and regular
  files etc/passwd, etc/group, etc/hosts, etc/resolv.conf (the unpacker in `lamina.images`
  makes them); symbolic links on the way are followed inside the image, as with the image
  as `/`. A missing one fails the sandbox with a `SandboxError` naming it; nothing is ever
  written into the image.
- `argv` is exec'd as it is (no warm interpreter): an `argv[0]` without a "/" is looked up
  in the PATH of the environment given to `start()` (`DEFAULT_PATH` if it has none), as
  execvp(3) does; one that cannot be executed fails `start()` as any entry point does (the
  `OSError` with `filename` = `argv[0]`). Its working directory is `spec.working_dir`; one
  the image lacks fails `start()` with an `OSError` whose `filename` is that directory.
- The runtime runs as Lambda's sandbox user, not as the image's USER (as Lambda does), with
  the same seccomp filter, no_new_privs, cgroup limits and network as a zip function's.
- `expect()` may prepare environments for an image ahead of need, as for a runtime (a
  `RuntimeSpec` with its `image_root`). The image roots it names are the whole set in use:
  a backend keeps nothing ready for an image it is no longer told about (a function of that
  image still starts; it pays the isolation then).

SnapStart templates (`spec.snapshot`; see `Template`):
- A backend that can snapshot a runtime (`can_snapshot(spec)`: the Python bootstrap, run in
  a warm interpreter, `python_in_zygote`) makes a *template* sandbox as any other; its
  runtime runs the function's init, its before-snapshot hooks, then stops at its snapshot
  point instead of asking for an invocation. `snapshotted()` returns once it is there, as
  a `Template`; it raises `SandboxError` if the runtime exits first (its init failed: the
  Runtime API has had its error), or for a spec the backend cannot snapshot
  (`SNAPSHOT_UNSUPPORTED`, raised by `create()` already).
- `Template.restore(spec)` makes a sandbox whose runtime is a copy of the template's at its
  snapshot point (a fork: module state kept, pages shared copy-on-write). It has the whole
  `Sandbox` contract: `prepare()` gives its own Runtime API, `start(env)` hands the copy its
  environment (the copy's `os.environ` becomes `env`, `env["AWS_LAMBDA_RUNTIME_API"]` its
  Runtime API) and lets it go on: it asks `GET /runtime/restore/next`, runs the
  after-restore hooks, then asks for invocations. `spec.argv`, the paths, the interpreter
  and the extensions are the template's; `spec.memory_mb` is the function's whole limit,
  the template's share included; `spec.output_fd`, `network`, `vpc` and the scratch
  directory are the copy's own. A restored sandbox is as isolated as any other (its own
  namespaces, cgroup, /tmp, network): the template's connections are closed, its /tmp
  files copied, nothing of it is writable by the copy.
- `Template.destroy()` kills the template and every sandbox restored from it; a second
  call is a no-op. Restoring from a destroyed template fails `prepare()` with SandboxError.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ExitCallback = Callable[[int], None]

#: the umask a runtime starts with, whatever the server's own (which keeps its data private,
#: see `lamina.datadir`): files a function writes in its /tmp get the modes they would get on
#: an ordinary Linux host
RUNTIME_UMASK = 0o022


class ExitWatch:
    """Exit bookkeeping for backends: the status once known, `on_exit` callbacks, and a future
    that `destroy()` can await. Create it on the event loop; call `exited()` there, once."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.status: int | None = None
        self.done: asyncio.Future[int] = self._loop.create_future()
        self._callbacks: list[ExitCallback] = []

    def exited(self, status: int) -> None:
        if self.status is not None:
            return
        self.status = status
        self.done.set_result(status)
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(status)

    def on_exit(self, callback: ExitCallback) -> None:
        if self.status is not None:
            self._loop.call_soon(callback, self.status)
        else:
            self._callbacks.append(callback)


async def connect_local(port: int) -> socket.socket:
    """A socket connected to `port` on the host's loopback (for backends whose sandboxes
    share the host's network)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def local_runtime_api() -> RuntimeApiEndpoint:
    """A Runtime API socket on the host's loopback, on a free port (for backends whose
    runtimes share the host's network)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return RuntimeApiEndpoint(sock, f"127.0.0.1:{sock.getsockname()[1]}")


class SandboxError(Exception):
    """A sandbox could not be created, started or stopped."""


#: why a backend that cannot run container-image functions refuses one
IMAGE_NEEDS_NAMESPACE = (
    "container-image functions need the namespace sandbox (lamina serve --sandbox namespace)"
)
#: why a backend refuses to snapshot a runtime (`spec.snapshot`)
SNAPSHOT_UNSUPPORTED = (
    "Lamina snapshots the Python bootstrap run in a warm interpreter: not a runtime started"
    " through AWS_LAMBDA_EXEC_WRAPPER, a container image, or a function with external"
    " extensions"
)
#: the PATH an image's entry point is looked up in when its environment sets none
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to make one execution environment."""

    sandbox_id: str
    #: the runtime's command line, with paths as the runtime sees them (see `lambda_paths`)
    argv: Sequence[str]
    #: the function's unpacked code on the host (LAMBDA_TASK_ROOT, the working directory)
    task_root: Path
    #: where the runtime's own files are on the host (LAMBDA_RUNTIME_DIR)
    runtime_dir: Path
    memory_mb: int
    ephemeral_storage_mb: int
    #: where the runtime's stdout and stderr go (an open descriptor the caller owns; the
    #: backend hands the runtime its own copy and never closes this one)
    output_fd: int
    #: the function's merged layers on the host (/opt), if it has any
    opt_dir: Path | None = None
    #: the runtime's image on the host (Lambda's /var/lang: bin/ and the bundled SDK in
    #: lib/), None for a custom runtime; a backend with `lambda_paths` shows it at /var/lang
    lang_dir: Path | None = None
    #: the runtime's interpreter on the host ("" for a custom runtime)
    interpreter: str = ""
    #: a Python runtime whose bootstrap a backend may run in a warm interpreter (a zygote)
    #: instead of executing `argv`
    python_in_zygote: bool = False
    #: False: no network at all but the Runtime API (where the backend can enforce it)
    network: bool = True
    #: the VPC (one of the backend's `EgressPolicy.vpcs`) whose networks the environment may
    #: reach beyond the default egress policy (where the backend enforces one)
    vpc: str | None = None
    #: external extensions to start before the runtime, as the runtime would see their paths
    extensions: Sequence[str] = ()
    #: where the extensions' stdout and stderr go (the caller owns it, as `output_fd`)
    extension_output_fd: int | None = None
    #: a container-image function's unpacked root filesystem on the host, shown read-only as
    #: `/` (see the module's contract); None for a zip function
    image_root: Path | None = None
    #: the runtime's working directory as it sees it; None: /var/task (a zip function's)
    working_dir: str | None = None
    #: a SnapStart template: the runtime stops at its snapshot point after its init (see
    #: the module's contract and `Sandbox.snapshotted`)
    snapshot: bool = False


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime as a backend may prepare for it ahead of need (see `SandboxBackend.expect`)."""

    interpreter: str
    python_in_zygote: bool
    runtime_dir: Path
    #: the runtime's image (Lambda's /var/lang), as `SandboxSpec.lang_dir`
    lang_dir: Path | None = None
    #: a container image's unpacked root, as `SandboxSpec.image_root` (the fields above are
    #: then ignored)
    image_root: Path | None = None


@dataclass(frozen=True)
class RuntimeApiEndpoint:
    #: a listening, non-blocking socket; the caller serves the Runtime API on it and closes it
    sock: socket.socket
    #: `host:port` as the runtime reaches it (AWS_LAMBDA_RUNTIME_API)
    address: str


class Sandbox(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def pid(self) -> int | None:
        """The runtime's process id on the host, once started (None if there is none)."""
        ...

    @property
    def scratch_dir(self) -> Path:
        """The sandbox's private writable directory (the function's /tmp)."""
        ...

    @property
    def out_of_memory(self) -> bool:
        """True once the backend killed the runtime for using more memory than
        `spec.memory_mb` (set before the exit callbacks run)."""
        ...

    async def prepare(self) -> RuntimeApiEndpoint: ...

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None: ...

    async def connect(self, port: int) -> socket.socket:
        """A TCP socket connected to `port` on the sandbox's loopback (raises OSError)."""
        ...

    def terminate(self) -> None:
        """Send the runtime (not the extensions) SIGTERM, as Lambda does in its Shutdown
        phase; a no-op once it is gone. Never raises."""
        ...

    def init_done(self) -> None:
        """The runtime finished its init phase: steady-state limits may apply now (Lambda
        runs the init phase with more CPU than a small function gets afterwards)."""
        ...

    def on_exit(self, callback: ExitCallback) -> None: ...

    def freeze(self) -> None:
        """Stop the sandbox's processes until `thaw()` (see the module's contract)."""
        ...

    def thaw(self) -> None: ...

    def memory_peak_mb(self) -> int:
        """The most memory the runtime has used so far, in MB (0 if unknown). Cheap, but may
        read /proc: call it off the hot path."""
        ...

    def memory_usage_mb(self) -> int | None:
        """The memory the sandbox holds now, in MB rounded up, as the host pays for it (its
        processes' own pages, its /tmp), or None if the backend cannot tell. What an idle
        environment is charged against the node's capacity; read off the hot path."""
        ...

    async def destroy(self) -> None: ...

    async def snapshotted(self) -> Template:
        """For a sandbox made with `spec.snapshot`: the template, once its runtime is at its
        snapshot point (see the module's contract). Raises SandboxError if it exits first."""
        ...


class Template(Protocol):
    """An initialised runtime held at its snapshot point: what restored sandboxes copy."""

    def restore(self, spec: SandboxSpec) -> Sandbox:
        """A new sandbox copied from the template (no blocking I/O, as `create()`)."""
        ...

    def memory_usage_mb(self) -> int | None:
        """The memory the template itself holds (MB), charged once to the node, or None."""
        ...

    @property
    def alive(self) -> bool:
        """False once the template's runtime is gone (killed, or its zygote died): its
        copies are gone too, and restoring from it fails; its owner makes another."""
        ...

    async def destroy(self) -> None:
        """Kill the template and every sandbox restored from it. Idempotent."""
        ...


class SandboxBackend(Protocol):
    #: "process", "namespace", "fake"
    name: str
    #: True: the code appears at /var/task, the runtime at /var/runtime and layers at /opt
    #: inside (as on Lambda); False: the runtime sees the host's own paths
    lambda_paths: bool

    @property
    def description(self) -> str:
        """One line for the start-up banner and /health."""
        ...

    def start(self) -> None:
        """Begin the backend's own background work (on the event loop, at server start)."""
        ...

    def expect(self, runtimes: Sequence[RuntimeSpec]) -> None:
        """A hint: functions on these runtimes exist, so cold starts on them are coming. A
        backend may prepare environments for them ahead of need (on the event loop). The
        container images among them are all those in use (see the module's contract)."""
        ...

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Allocate a sandbox (scratch directory and the like); start nothing yet."""
        ...

    def can_snapshot(self, spec: SandboxSpec) -> bool:
        """True if a sandbox of `spec` (with `snapshot` set) can become a template."""
        ...

    async def close(self) -> None:
        """Release what the backend itself holds. Sandboxes are destroyed by their owners."""
        ...
