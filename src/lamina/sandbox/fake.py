"""The `fake` backend, for fast tests: the "runtime" is a thread in this process.

It runs Lamina's real Python bootstrap loop against the environment's real Runtime API, with
handlers given as Python callables instead of imported from code. Nothing is isolated and
nothing is forked, so scheduler tests run in milliseconds without root.

SnapStart: a template sandbox (`spec.snapshot`) looks its handler up (its "init"), runs the
function's before-snapshot hook (`FakeHooks`), and stops there; its `FakeTemplate` restores
sandboxes that skip all that: they ask `/restore/next`, run the after-restore hook (a hook
that raises: `/restore/error`, and the runtime ends), then serve invocations. Nothing is
copied: the "module state" a test sees is whatever its callables close over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.runtimes.python import bootstrap
from lamina.sandbox.api import (
    SNAPSHOT_UNSUPPORTED,
    ExitCallback,
    ExitWatch,
    RuntimeApiEndpoint,
    RuntimeSpec,
    SandboxError,
    SandboxSpec,
    Template,
    connect_local,
    local_runtime_api,
)

FakeHandler = Callable[[Any, Any], Any]

#: the errorTypes of AWS's Python runtime for a failed SnapStart hook
BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"


@dataclass(frozen=True)
class FakeHooks:
    """A fake function's SnapStart runtime hooks (as `snapshot_restore_py` registers them)."""

    before_snapshot: Callable[[], None] | None = None
    after_restore: Callable[[], None] | None = None


def _hook_error(kind: str, e: Exception) -> dict[str, Any]:
    return {"errorType": kind, "errorMessage": f"{type(e).__name__}: {e}", "stackTrace": []}


class FakeSandbox:
    def __init__(
        self,
        spec: SandboxSpec,
        handlers: Mapping[str, FakeHandler],
        root: Path,
        usage: Callable[[], int | None] = lambda: None,
        hooks: Mapping[str, FakeHooks] | None = None,
        template: FakeTemplate | None = None,
        backend: FakeBackend | None = None,
    ) -> None:
        self._spec = spec
        self._hooks = hooks or {}
        self._template = template
        self._backend = backend
        #: a template's: its template once the runtime is at its snapshot point
        self._snap: asyncio.Future[Template] = asyncio.get_running_loop().create_future()
        self._backend_usage = usage
        self._handlers = handlers
        self._scratch = root / spec.sandbox_id
        self._thread: threading.Thread | None = None
        self._client: bootstrap.RuntimeClient | None = None
        self._loop = asyncio.get_running_loop()
        self._exit = ExitWatch()
        self._exit.on_exit(self._exited_first)
        self._destroyed = False

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def pid(self) -> int | None:
        return None

    @property
    def scratch_dir(self) -> Path:
        return self._scratch

    async def prepare(self) -> RuntimeApiEndpoint:
        if self._template is not None and self._template.destroyed:
            raise SandboxError(f"sandbox {self.id}: its template was destroyed")
        return local_runtime_api()

    async def connect(self, port: int) -> socket.socket:
        return await connect_local(port)

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if extensions_started is not None:
            await extensions_started()  # the fake starts no processes; in-process ones register
        self._scratch.mkdir(parents=True)  # tiny, and the fake is for tests: on the loop
        env = dict(env)
        if "AWS_LAMBDA_RUNTIME_API" not in env:
            raise SandboxError("no AWS_LAMBDA_RUNTIME_API in the sandbox's environment")
        self._client = bootstrap.RuntimeClient(env["AWS_LAMBDA_RUNTIME_API"])
        self._thread = threading.Thread(target=self._run, args=(env,), daemon=True)
        self._thread.start()

    def _run(self, env: dict[str, str]) -> None:
        assert self._client is not None
        status: int | None = 0
        name = env.get("_HANDLER", "")
        handler = self._handlers.get(name)
        hooks = self._hooks.get(name, FakeHooks())
        try:
            if handler is None:
                error = bootstrap.InitError(
                    "Runtime.HandlerNotFound", f"Handler '{env.get('_HANDLER')}' missing"
                )
                self._client.post_init_error(error.to_json())
                status = 1
            elif self._template is not None:
                status = self._restored(handler, hooks, env)
            elif self._spec.snapshot:
                status = self._to_snapshot_point(hooks, env)
            else:
                bootstrap.serve(self._client, handler, env)
        except Exception:
            status = 1
        finally:
            self._client.close()
            if status is not None:  # None: held as a template, until it is destroyed
                self._loop.call_soon_threadsafe(self._exit.exited, status)

    def _to_snapshot_point(self, hooks: FakeHooks, env: dict[str, str]) -> int | None:
        assert self._client is not None
        if hooks.before_snapshot is not None:
            try:
                hooks.before_snapshot()
            except Exception as e:
                self._client.post_init_error(_hook_error(BEFORE_SNAPSHOT_ERROR, e))
                return 1
        self._loop.call_soon_threadsafe(self._at_snapshot_point)
        return None

    def _at_snapshot_point(self) -> None:
        if self._destroyed:
            # Destroyed while its init ran (a real backend would have killed it): no template.
            self._exit.exited(-9)
            return
        template = FakeTemplate(self, self._handlers, self._hooks, self._backend)
        if self._backend is not None:
            self._backend.snapshots += 1
        if not self._snap.done():
            self._snap.set_result(template)

    def _restored(self, handler: FakeHandler, hooks: FakeHooks, env: dict[str, str]) -> int:
        client = self._client
        assert client is not None
        # The bootstrap's client has no restore calls of its own (the real bootstrap's
        # SnapStart support is the runtime's side): the fake speaks the two requests itself.
        status, _, body = client._request("GET", "/restore/next")
        if status != 200:
            raise RuntimeError(f"Runtime API /restore/next answered {status}: {body!r}")
        if hooks.after_restore is not None:
            try:
                hooks.after_restore()
            except Exception as e:
                error = _hook_error(AFTER_RESTORE_ERROR, e)
                client._request(
                    "POST",
                    "/restore/error",
                    json.dumps(error).encode(),
                    {"Lambda-Runtime-Function-Error-Type": AFTER_RESTORE_ERROR},
                )
                return 1
        bootstrap.serve(client, handler, env)
        return 0

    @property
    def out_of_memory(self) -> bool:
        return False  # threads share this process's memory: nothing to enforce

    def terminate(self) -> None:
        pass  # the fake's runtime is a thread: no signal reaches it

    def init_done(self) -> None:
        pass

    def freeze(self) -> None:
        pass  # a thread of this process cannot be stopped alone

    def thaw(self) -> None:
        pass

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit.on_exit(callback)

    def _exited_first(self, status: int) -> None:
        if not self._snap.done():
            self._snap.set_exception(
                SandboxError(
                    f"sandbox {self.id}: the runtime exited ({status}) before its snapshot"
                )
            )
            self._snap.exception()  # retrieved: a sandbox nobody snapshots must not warn

    def template_gone(self) -> None:
        """Its template was destroyed: the held runtime is gone."""
        self._exit.exited(-9)

    def memory_peak_mb(self) -> int:
        return 0

    def memory_usage_mb(self) -> int | None:
        return self._backend_usage()

    async def destroy(self) -> None:
        # A thread cannot be killed: the environment's Runtime API is closed by its owner,
        # which ends the bootstrap loop. Wait for that briefly, then let the daemon go.
        self._destroyed = True
        if self._thread is not None and self._exit.status is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit.done), timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)

    async def snapshotted(self) -> Template:
        if not self._spec.snapshot:
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        return await asyncio.shield(self._snap)


class FakeTemplate:
    """A fake template: it remembers its function's handlers and hooks (its "init" ran
    once, in the template sandbox) and restores sandboxes that skip init."""

    def __init__(
        self,
        held: FakeSandbox,
        handlers: Mapping[str, FakeHandler],
        hooks: Mapping[str, FakeHooks],
        backend: FakeBackend | None,
    ) -> None:
        self._held = held
        self._handlers = handlers
        self._hooks = hooks
        self._backend = backend
        self.destroyed = False
        self.killed = False
        self.restored: list[FakeSandbox] = []

    def restore(self, spec: SandboxSpec) -> FakeSandbox:
        root = self._backend.root if self._backend is not None else self._held.scratch_dir.parent
        usage = self._backend.usage if self._backend is not None else (lambda: None)
        sandbox = FakeSandbox(
            spec, self._handlers, root, usage, self._hooks, template=self, backend=self._backend
        )
        self.restored.append(sandbox)
        if self._backend is not None:
            self._backend.restores += 1
        return sandbox

    def memory_usage_mb(self) -> int | None:
        return self._backend.template_mb if self._backend is not None else None

    @property
    def alive(self) -> bool:
        return not self.destroyed and not self.killed

    def kill(self) -> None:
        """The template dies as a real one would (its zygote gone, say)."""
        self.killed = True

    async def destroy(self) -> None:
        if self.destroyed:
            return
        self.destroyed = True
        if self._backend is not None:
            self._backend.templates_destroyed += 1
        self._held.template_gone()
        # Restored sandboxes are threads that end when their owners close their Runtime APIs.
        shutil.rmtree(self._held.scratch_dir, ignore_errors=True)


class FakeBackend:
    name = "fake"
    lambda_paths = False
    description = "fake (threads in the server, for tests)"

    def __init__(
        self,
        handlers: Mapping[str, FakeHandler],
        hooks: Mapping[str, FakeHooks] | None = None,
    ) -> None:
        self.handlers = handlers
        #: SnapStart hooks by handler name
        self.hooks = hooks or {}
        #: what each sandbox says it holds (`memory_usage_mb`); None: it cannot tell
        self.usage_mb: int | None = None
        #: what each template says it holds (`Template.memory_usage_mb`)
        self.template_mb: int | None = None
        #: SnapStart counters for tests: templates made, sandboxes restored, templates gone
        self.snapshots = 0
        self.restores = 0
        self.templates_destroyed = 0
        #: False: refuse snapshots, as a backend that cannot make them
        self.snapshot_capable = True
        self.root = Path(tempfile.mkdtemp(prefix="lamina-fake-"))

    def start(self) -> None:
        pass

    def can_snapshot(self, spec: SandboxSpec) -> bool:
        return self.snapshot_capable

    def usage(self) -> int | None:
        return self.usage_mb

    def expect(self, runtimes: Sequence[RuntimeSpec]) -> None:
        pass

    def create(self, spec: SandboxSpec) -> FakeSandbox:
        if spec.snapshot and not self.snapshot_capable:
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        return FakeSandbox(spec, self.handlers, self.root, self.usage, self.hooks, backend=self)

    async def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
