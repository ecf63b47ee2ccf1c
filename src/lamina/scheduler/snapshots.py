"""SnapStart templates on this node: one per published SnapStart version (function, version).

A template is made when the version is published (`build`, told by the control plane's
change feed), or lazily by the first cold start that needs one and finds none (after a
server restart, or on a cluster node other than the one that published): an environment
made with `snapshot` runs the version's init once, as any init (its output in the version's
log group, Telemetry's platform.initStart, its errors through the Runtime API), and stops at
its snapshot point; the `Template` it hands over is held here until the version or its
function is deleted, or the server closes. Cold starts of the version restore from it
(`Environment(template=...)`) instead of making a sandbox.

A build at publish settles the version through `on_built` (the control plane's settle path,
`control.snapstart.settled`): Active, or Failed with the init's error. A lazy build that
fails leaves the cold start to an ordinary init (the version stays as it is: it was Active
once, on the node that published it).

Memory: the template environment takes its MemorySize from the node's capacity while its
init runs, as any environment; once at its snapshot point it is charged what the template
says it holds (`Template.memory_usage_mb`, its MemorySize if it cannot tell), once, until
it is destroyed. Restored environments take their MemorySize as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from lamina.errors import ResourceConflictError, SnapStartNotReadyError
from lamina.models import FunctionConfig, FunctionState
from lamina.sandbox import Template
from lamina.scheduler.capacity import MemoryCapacity
from lamina.scheduler.environment import Environment, EnvironmentContext, InitFailed

log = logging.getLogger(__name__)

#: `on_built(config, failure)`: the template of `config` is made (`failure` None) or its init
#: failed with `failure` (the Runtime API's error body)
Built = Callable[[FunctionConfig, bytes | None], Awaitable[None]]


@dataclass
class _Entry:
    config: FunctionConfig
    #: done with the template, or None if it could not be made
    ready: asyncio.Future[Template | None]
    task: asyncio.Task[None] | None = None
    charged_mb: int = 0
    #: what still runs for it (the build; its template's destruction)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Snapshots:
    """The SnapStart templates this node holds, by (function, version)."""

    def __init__(
        self,
        capacity: MemoryCapacity,
        context: Callable[[FunctionConfig], EnvironmentContext],
    ) -> None:
        self._capacity = capacity
        self._context = context
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._destroying: set[asyncio.Task[None]] = set()
        #: the control plane's settle path (the server sets it); None: nobody is told
        self.on_built: Built | None = None

    def held(self, name: str, version: str) -> Template | None:
        """The version's template if it is made (no waiting)."""
        entry = self._entries.get((name, version))
        if entry is None or not entry.ready.done() or entry.ready.cancelled():
            return None
        return entry.ready.result()

    def build(self, config: FunctionConfig) -> None:
        """Make the template of a published SnapStart version in the background, once (a
        version that has one, or one being made, is left alone)."""
        if config.snap_start_on and (config.name, config.version) not in self._entries:
            self._start(config, settle=True)

    async def template(self, config: FunctionConfig) -> Template | None:
        """For a cold start of `config`: its template, made now if this node has none; None
        if it cannot be made (the caller starts an environment the ordinary way)."""
        key = (config.name, config.version)
        entry = self._entries.get(key)
        if entry is not None and entry.ready.done() and not entry.ready.cancelled():
            held = entry.ready.result()
            if held is not None and not held.alive:
                # Gone under us (its zygote died, say): made again, as after a restart.
                log.warning("SnapStart template of %s:%s is gone: making it again", *key)
                self._drop(key)
                entry = None
        if entry is None:
            entry = self._start(config, settle=False)
        return await asyncio.shield(entry.ready)

    def forget(self, name: str, version: str | None = None) -> None:
        """The version (`version` None: every version of the function) is gone: destroy its
        template, in the background."""
        for key in [k for k in self._entries if k[0] == name]:
            if version is None or key[1] == version:
                self._drop(key)

    def retain(self, name: str, version: str, config: FunctionConfig | None) -> None:
        """A change of (name, version) was told: drop a template that no longer matches it
        (the version deleted, or SnapStart off)."""
        entry = self._entries.get((name, version))
        if entry is None:
            return
        if config is None or not config.snap_start_on:
            self._drop((name, version))

    async def close(self) -> None:
        """Stop the builds under way and destroy every template (the server is stopping)."""
        building = [e.task for e in self._entries.values() if e.task and not e.task.done()]
        for task in building:
            task.cancel()
        await asyncio.gather(*building, return_exceptions=True)
        for key in list(self._entries):
            self._drop(key)
        while self._destroying:
            await asyncio.gather(*list(self._destroying), return_exceptions=True)

    @property
    def count(self) -> int:
        return sum(1 for key in self._entries if (t := self.held(*key)) is not None and t.alive)

    # -- internals -----------------------------------------------------------------

    def _start(self, config: FunctionConfig, *, settle: bool) -> _Entry:
        loop = asyncio.get_running_loop()
        entry = _Entry(config, loop.create_future())
        self._entries[(config.name, config.version)] = entry
        entry.task = loop.create_task(self._make(entry, settle))
        return entry

    async def _make(self, entry: _Entry, settle: bool) -> None:
        config = entry.config
        failure: bytes | None = None
        template: Template | None = None
        try:
            template, failure = await self._init(entry)
        except asyncio.CancelledError:
            if not entry.ready.done():
                entry.ready.set_result(None)
            if self._entries.get((config.name, config.version)) is entry:
                del self._entries[(config.name, config.version)]
            raise
        except Exception as e:  # a bug or the host: the version says so rather than hang
            log.exception("SnapStart template of %s:%s failed", config.name, config.version)
            failure = _payload("Runtime.Unknown", f"Lamina could not make the snapshot: {e}")
        if self._entries.get((config.name, config.version)) is not entry:
            # Forgotten meanwhile (the version was deleted): the template goes at once.
            if template is not None:
                self._destroy(template, entry.charged_mb)
            template = None
        elif template is None:
            del self._entries[(config.name, config.version)]  # a later cold start tries again
        if not entry.ready.done():
            entry.ready.set_result(template)
        if settle and self.on_built is not None:
            try:
                await self.on_built(config, failure if template is None else None)
            except Exception:
                log.exception("could not record the SnapStart state of %s", config.name)

    async def _init(self, entry: _Entry) -> tuple[Template | None, bytes | None]:
        """Run the version's init in a template environment: (template, None) or (None,
        the init's error)."""
        config = entry.config
        try:
            ctx = self._context(config)
        except Exception as e:
            return None, _payload("Runtime.Unknown", str(e))
        # A backend that cannot snapshot the runtime refuses the template sandbox
        # (SNAPSHOT_UNSUPPORTED): the start fails with that reason, and so does the version.
        await self._capacity.take(config.memory_size)
        env = Environment(ctx, snapshot=True)
        try:
            await env.start()
        except InitFailed as failed:
            self._capacity.give_back(config.memory_size)
            return None, failed.payload
        template = env.detach_template()
        held = template.memory_usage_mb()
        charged = config.memory_size if held is None else min(held, config.memory_size)
        self._capacity.give_back(config.memory_size - charged)
        entry.charged_mb = charged
        log.info("SnapStart template of %s:%s made (%d MB)", config.name, config.version, charged)
        return template, None

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key)
        if not entry.ready.done():
            return  # its build sees it was forgotten and destroys what it made
        template = entry.ready.result()
        if template is not None:
            self._destroy(template, entry.charged_mb)

    def _destroy(self, template: Template, charged_mb: int) -> None:
        async def destroy() -> None:
            try:
                await template.destroy()
            except Exception:
                log.exception("a SnapStart template could not be destroyed")
            finally:
                with contextlib.suppress(Exception):
                    self._capacity.give_back(charged_mb)

        task = asyncio.get_running_loop().create_task(destroy())
        self._destroying.add(task)
        task.add_done_callback(self._destroying.discard)


def require_restorable(config: FunctionConfig) -> None:
    """A SnapStart version runs only once its template is made: SnapStartNotReadyException
    while it is Pending, ResourceConflictException once it has Failed (as Invoke answers,
    `control.snapstart.require_invocable`; here for the callers that do not go through it)."""
    if config.state is FunctionState.PENDING:
        raise SnapStartNotReadyError(SnapStartNotReadyError.MESSAGE)
    if config.state is not FunctionState.ACTIVE:
        raise ResourceConflictError(
            "The operation cannot be performed at this time. The function is currently in the "
            f"following state: {config.state.value}"
        )


def snap_start_env(config: FunctionConfig, env: Mapping[str, str]) -> Mapping[str, str]:
    """A pool's Lambda-defined variables (`env`), as a SnapStart version's environments (its
    template and those restored from it) get them on Lambda: the init type `snap-start`,
    and no AWS_LAMBDA_LOG_GROUP_NAME (nor AWS_LAMBDA_LOG_STREAM_NAME, which `Environment`
    leaves out): one snapshot serves every log stream."""
    if not config.snap_start_on:
        return env
    out = {k: v for k, v in env.items() if k != "AWS_LAMBDA_LOG_GROUP_NAME"}
    out["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    return out


def _payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()
