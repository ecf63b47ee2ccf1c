"""The vocabulary of an environment's lifecycle (see `scheduler.environment`): its states and
their legal moves, how an invocation ended, the failures a start raises, and what every
environment of one pool shares (`EnvironmentContext`)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

from lamina.errors import LaminaError
from lamina.models import FunctionConfig
from lamina.observability import LogWriter, Metrics
from lamina.sandbox import SandboxBackend
from lamina.scheduler.debugging import Debugger


class Outcome(IntEnum):
    """How an invocation ended, as the invocation metric counts it (values index a tuple
    of metric children, so they run from 0)."""

    SUCCESS = 0
    #: the handler (or its init, reported through the Runtime API) failed
    FUNCTION_ERROR = 1
    TIMEOUT = 2
    #: the runtime exited or ran out of memory, the response was too large, or the
    #: environment never started
    PLATFORM_ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class NotDelivered(Exception):
    """The environment died before its runtime picked the invocation up: run it elsewhere."""


class EnvState(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


ALLOWED: dict[EnvState, frozenset[EnvState]] = {
    EnvState.STARTING: frozenset({EnvState.IDLE, EnvState.DEAD}),
    EnvState.IDLE: frozenset({EnvState.BUSY, EnvState.DEAD}),
    EnvState.BUSY: frozenset({EnvState.IDLE, EnvState.DEAD}),
    EnvState.DEAD: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class InitFailed(Exception):
    """The environment never became ready; `payload` is what the caller gets (an error), or
    `error` is raised to it instead (a SnapStart restore that failed: SnapStartException)."""

    def __init__(self, payload: bytes, error: LaminaError | None = None) -> None:
        super().__init__(payload.decode(errors="replace"))
        self.payload = payload
        self.error = error


def error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def list_extensions(opt_dir: Path) -> list[str]:
    """The external extensions in a function's layers: executable files directly under
    `/opt/extensions/`, by name (Lambda starts them in this order)."""
    try:
        entries = sorted(os.scandir(opt_dir / "extensions"), key=lambda e: e.name)
    except OSError:
        return []
    return [
        e.name
        for e in entries
        if e.is_file() and os.access(e.path, os.X_OK) and not e.name.startswith(".")
    ]


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-status)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {status}"


@dataclass(frozen=True)
class EnvironmentContext:
    """What every environment of one pool shares."""

    config: FunctionConfig
    argv: tuple[str, ...]
    task_root: Path
    runtime_dir: Path
    #: the Lambda-defined variables that do not depend on the environment itself
    base_env: Mapping[str, str]
    backend: SandboxBackend
    metrics: Metrics
    logs: LogWriter
    #: custom runtimes are billed for their init phase, as Lambda bills them
    bill_init: bool = False
    #: the function's merged layers on the host, if any
    opt_dir: Path | None = None
    #: the runtime's interpreter on the host ("" for custom runtimes)
    interpreter: str = ""
    #: a Python runtime: a backend may run its bootstrap in a warm zygote
    python_in_zygote: bool = False
    #: False for a function set to have no network (LAMINA_NETWORK=none)
    network: bool = True
    #: the VPC whose networks its environments may reach (None: none)
    vpc: str | None = None
    #: each new environment's AWS credentials (key id, secret, session token), made when it
    #: starts so that a long-lived pool's later environments get fresh ones (None: dummies)
    credentials: Callable[[], tuple[str, str, str]] | None = None
    #: builds what the runtime needs before it can start, if anything (blocking, cheap once
    #: done; Java's client is compiled on first use)
    prepare_runtime: Callable[[], None] | None = None
    #: the account the function belongs to (the Extensions API's register answer)
    account_id: str = ""
    #: the runtime's image on the host (Lambda's /var/lang), None for a custom runtime
    lang_dir: Path | None = None
    #: awaited before each start: returns once the runtime's image is ready, or has had
    #: its time (see `RuntimeImages.wait`)
    image_ready: Callable[[], Awaitable[None]] | None = None
    #: awaited before each start (cluster mode): returns once the function's code and layers
    #: are on this node, fetched from the cluster if need be; raises if they cannot be
    code_ready: Callable[[], Awaitable[None]] | None = None
    #: a container-image function's unpacked root filesystem (its `/`), and the runtime's
    #: working directory in it
    image_root: Path | None = None
    working_dir: str | None = None
    #: environments start with the language's debugger listening (see `debugging`)
    debugger: Debugger | None = None
    #: awaited before a debug environment starts: returns once the debugger is installed
    debugger_ready: Callable[[], Awaitable[None]] | None = None
