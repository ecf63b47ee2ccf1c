"""Runtime images: what Lambda ships beside each managed runtime's interpreter.

On Lambda a Python runtime comes with boto3 and a Node.js runtime with the AWS SDK for
JavaScript v3, under /var/lang. Lamina builds the same, once per runtime, in the runtimes
directory (`<data-dir>/runtimes`, or `LAMINA_RUNTIME_CACHE`):

    <runtimes>/python3.11/bin/python3.11 -> the host's interpreter (and python3, python)
    <runtimes>/python3.11/lib/python3.11/site-packages/boto3 ...   (pip install --target)
    <runtimes>/nodejs20.x/bin/node -> the host's node
    <runtimes>/nodejs20.x/lib/node_modules/@aws-sdk/client-lambda ... (npm install)

A sandbox shows the runtime's directory at /var/lang (the namespace backend mounts it; the
process backend points PATH, PYTHONPATH and NODE_PATH at it), so PATH never names the host's
own interpreter directory and the function sees the SDK where Lambda keeps it.

The SDK is installed in the background (`ensure`), never on the event loop, with pip's and
npm's progress in the server log; what is there is reused (offline, a runtime whose SDK is
installed keeps working). An install goes to a staging directory renamed into place when it is
complete, under a file lock, so servers sharing a runtimes directory install each SDK once.
Without network (or pip/npm) the runtime runs without its SDK, and says so (`status`).

No import from the rest of lamina but the catalog: this module is the runtimes' packaging.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lamina.runtimes.catalog import Family, RuntimeInfo

log = logging.getLogger(__name__)

#: boto3 as Lamina bundles it with every Python runtime. Lambda's own bundled version
#: depends on the runtime release and the region (AWS documents no fixed one); Lamina pins one
#: so that every host runs the same code. Its dependencies (botocore, s3transfer, jmespath,
#: python-dateutil, urllib3) come with it, at the versions boto3 asks for.
PYTHON_SDK: tuple[str, ...] = ("boto3==1.43.11", "botocore==1.43.11")
#: Runtimes whose Python the pin no longer supports keep the last boto3 that did, as AWS
#: freezes a deprecated runtime's SDK (boto3 1.43 needs Python 3.10 or newer).
PYTHON_SDK_FOR: dict[str, tuple[str, ...]] = {
    "3.9": ("boto3==1.42.97", "botocore==1.42.97"),
}

#: The AWS SDK for JavaScript v3 packages Lamina bundles with every Node.js runtime. Lambda
#: bundles every v3 client; Lamina installs the ones functions use most (the rest a function
#: ships itself). No versions: the v3 packages are not released at one common version, and
#: npm resolves their shared dependencies best when it picks each package's latest.
NODE_SDK: tuple[str, ...] = (
    "@aws-sdk/client-lambda",
    "@aws-sdk/client-s3",
    "@aws-sdk/client-dynamodb",
    "@aws-sdk/lib-dynamodb",
    "@aws-sdk/client-sqs",
    "@aws-sdk/client-sns",
    "@aws-sdk/client-sts",
    "@aws-sdk/client-ssm",
    "@aws-sdk/client-secrets-manager",
    "@aws-sdk/client-eventbridge",
    "@aws-sdk/client-cloudwatch-logs",
    "@aws-sdk/client-kinesis",
    "@aws-sdk/credential-providers",
)

#: The debugger Lamina starts in a Python environment in debug mode (`lamina invoke --debug`,
#: LAMINA_DEBUG), installed on first use into the runtime's image beside (not into) the
#: bundled SDK: `<runtimes>/python3.11/debugger/debugpy`, which functions never import.
DEBUGPY = "debugpy==1.8.22"
DEBUGGER_DIR = "debugger"

#: seconds one install may take before it is given up (and the runtime runs without)
INSTALL_TIMEOUT_S = 900.0
_MARKER = ".lamina-sdk"


@dataclass(frozen=True)
class SdkState:
    """Where a runtime's bundled SDK stands."""

    #: "ready", "installing", "missing" (not installed, or failed), "none" (nothing to bundle)
    state: str
    #: what is installed, or why not
    detail: str = ""


def sdk_packages(runtime: RuntimeInfo) -> tuple[str, ...]:
    """What is bundled with `runtime` (nothing for a custom runtime)."""
    if runtime.family is Family.PYTHON:
        return PYTHON_SDK_FOR.get(".".join(runtime.version.split(".")[:2]), PYTHON_SDK)
    if runtime.family is Family.NODE:
        return NODE_SDK
    return ()


def site_packages(runtime: RuntimeInfo) -> str:
    """The SDK's directory under the image, as `lib/...` (Python: lib/pythonX.Y/site-packages,
    Node.js: lib/node_modules)."""
    if runtime.family is Family.PYTHON:
        minor = ".".join(runtime.version.split(".")[:2])
        return f"lib/python{minor}/site-packages"
    return "lib/node_modules"


class RuntimeImages:
    """The runtimes directory: each managed runtime's image, made and filled on demand."""

    def __init__(self, root: Path, install: bool = True) -> None:
        self.root = root
        self._install = install
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, SdkState] = {}

    def image_dir(self, runtime: RuntimeInfo) -> Path | None:
        """The runtime's image on the host (Lambda's /var/lang); None for a custom runtime and
        for Java (its JVM is the host's JDK, started by Lamina's launcher; nothing bundled)."""
        if runtime.family not in (Family.PYTHON, Family.NODE):
            return None
        return self.root / runtime.name

    def link(self, runtimes: Iterable[RuntimeInfo]) -> None:
        """Make each image's bin/ (links to the host's interpreter). Blocking, quick: at start,
        off the event loop."""
        for runtime in runtimes:
            image = self.image_dir(runtime)
            if image is None or not runtime.executable:
                continue
            bin_dir = image / "bin"
            bin_dir.mkdir(parents=True, exist_ok=True)
            # The sandbox's user reads the image through a mount of it, whatever the server's
            # (private) umask made of it.
            for readable in (image, bin_dir):
                os.chmod(readable, 0o755)
            for name in _interpreter_names(runtime):
                _symlink(bin_dir / name, runtime.executable)
            if (image / "lib" / _MARKER).exists():
                self._states.setdefault(runtime.name, _installed_state(image))

    def status(self, runtime: RuntimeInfo) -> SdkState:
        """What the runtime's functions find of their SDK now."""
        image = self.image_dir(runtime)
        if image is None:
            return SdkState("none", "custom runtimes bundle nothing")
        state = self._states.get(runtime.name)
        if state is not None:
            return state
        if (image / "lib" / _MARKER).exists():
            return _installed_state(image)
        if not self._install:
            return SdkState("missing", "installation turned off (--no-runtime-sdk)")
        return SdkState("missing", "not installed yet")

    def ensure(self, runtimes: Iterable[RuntimeInfo]) -> None:
        """Install the SDK of each runtime that lacks it, in the background (on the loop)."""
        for runtime in runtimes:
            if self.image_dir(runtime) is None or not self._install:
                continue
            task = self._tasks.get(runtime.name)
            if task is None:
                self._tasks[runtime.name] = asyncio.ensure_future(self._ensure(runtime))

    async def install(self, runtimes: Iterable[RuntimeInfo]) -> dict[str, SdkState]:
        """Make the images of `runtimes` and install their SDKs now (for tools and test
        set-ups that want them in place before any server starts); returns each one's state."""
        wanted = list(runtimes)
        await asyncio.get_running_loop().run_in_executor(None, self.link, wanted)
        self.ensure(wanted)
        await asyncio.gather(*(self._tasks[r.name] for r in wanted if r.name in self._tasks))
        return {r.name: self.status(r) for r in wanted}

    async def wait(self, runtime: RuntimeInfo, limit_s: float) -> None:
        """Wait, at most `limit_s` seconds, for an install of the runtime's SDK under way:
        Lambda functions count on their SDK, so a first cold start gives it time to arrive.
        Returns at once when no install is running."""
        task = self._tasks.get(runtime.name)
        if task is None or task.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), limit_s)
        if not task.done():
            log.warning(
                "runtime %s: its AWS SDK is still installing; this environment starts without it",
                runtime.name,
            )

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _ensure(self, runtime: RuntimeInfo) -> None:
        image = self.image_dir(runtime)
        assert image is not None
        loop = asyncio.get_running_loop()
        wanted = " ".join(sdk_packages(runtime))
        if _marker(image) == wanted:
            self._states[runtime.name] = _installed_state(image)
            return
        self._states[runtime.name] = SdkState("installing", wanted)
        lock = await loop.run_in_executor(None, _lock, self.root / f"{runtime.name}.lock")
        try:
            if _marker(image) == wanted:  # another server installed it meanwhile
                self._states[runtime.name] = _installed_state(image)
                return
            started = time.monotonic()
            log.info("runtime %s: installing its AWS SDK (%s)...", runtime.name, wanted)
            try:
                await asyncio.wait_for(self._install_into(runtime, image), INSTALL_TIMEOUT_S)
            except Exception as e:  # whatever failed, the runtime goes on without its SDK
                why = str(e) or type(e).__name__
                self._states[runtime.name] = SdkState("missing", f"install failed: {why}")
                log.warning(
                    "runtime %s: its AWS SDK could not be installed (%s); functions on it run "
                    "without it until it can be (restart the server with network access to "
                    "PyPI/npm)",
                    runtime.name,
                    why,
                )
                return
            self._states[runtime.name] = _installed_state(image)
            log.info(
                "runtime %s: AWS SDK installed in %.1f s (%s)",
                runtime.name,
                time.monotonic() - started,
                self._states[runtime.name].detail,
            )
        finally:
            os.close(lock)

    async def _install_into(self, runtime: RuntimeInfo, image: Path) -> None:
        """Install into a staging directory, then swap it in as the image's lib/."""
        staging = image / f"lib.new-{os.getpid()}"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: shutil.rmtree(staging, ignore_errors=True))
        try:
            if runtime.family is Family.PYTHON:
                target = staging / site_packages(runtime).removeprefix("lib/")
                await _run(runtime.name, "pip", _pip_command(runtime, target))
            else:
                npm = shutil.which("npm")
                if npm is None:
                    raise InstallError("npm is not installed on this host")
                # npm installs into <prefix>/node_modules; the image keeps it as lib/.
                staging.mkdir(parents=True)
                os.chmod(staging, 0o755)
                await _run(runtime.name, "npm", _npm_command(npm, runtime, staging))
            marker = " ".join(sdk_packages(runtime))
            # The installers wrote under the server's private umask (`lamina.datadir`); the
            # sandbox's user reads the image through a mount of it.
            await loop.run_in_executor(None, _open_up, staging)
            await loop.run_in_executor(None, _swap, staging, image / "lib", marker)
        finally:
            await loop.run_in_executor(None, lambda: shutil.rmtree(staging, ignore_errors=True))


class DebuggerInstaller:
    """Installs debugpy into each Python runtime's image on first use (from PyPI), once per
    image: under the image's lock, into a staging directory renamed into place."""

    def __init__(self, images: RuntimeImages) -> None:
        self._images = images
        self._tasks: dict[str, asyncio.Task[Path]] = {}

    def installed(self, runtime: RuntimeInfo) -> bool:
        image = self._images.image_dir(runtime)
        return image is not None and _marker_of(image / DEBUGGER_DIR) == DEBUGPY

    async def ensure(self, runtime: RuntimeInfo) -> Path:
        """debugpy's directory on the host (installs it first if need be; raises
        InstallError)."""
        task = self._tasks.get(runtime.name)
        if task is None or (task.done() and task.exception() is not None):
            task = self._tasks[runtime.name] = asyncio.ensure_future(self._install(runtime))
        return await asyncio.shield(task)

    async def _install(self, runtime: RuntimeInfo) -> Path:
        image = self._images.image_dir(runtime)
        if image is None or runtime.family is not Family.PYTHON:
            raise InstallError(f"{runtime.name} has no debugpy")
        target = image / DEBUGGER_DIR
        if _marker_of(target) == DEBUGPY:
            return target
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._images.link, [runtime])
        lock = await loop.run_in_executor(None, _lock, self._images.root / f"{runtime.name}.lock")
        try:
            if _marker_of(target) == DEBUGPY:
                return target
            started = time.monotonic()
            log.info("runtime %s: installing the debugger (%s)...", runtime.name, DEBUGPY)
            staging = image / f"{DEBUGGER_DIR}.new-{os.getpid()}"
            await loop.run_in_executor(None, lambda: shutil.rmtree(staging, ignore_errors=True))
            try:
                argv = _pip_command(runtime, staging, (DEBUGPY,))
                await asyncio.wait_for(_run(runtime.name, "pip", argv), INSTALL_TIMEOUT_S)
                await loop.run_in_executor(None, _open_up, staging)
                await loop.run_in_executor(None, _swap, staging, target, DEBUGPY)
            finally:
                await loop.run_in_executor(None, lambda: shutil.rmtree(staging, ignore_errors=True))
            log.info(
                "runtime %s: debugger installed in %.1f s", runtime.name, time.monotonic() - started
            )
            return target
        finally:
            os.close(lock)


def debugger_state(images: RuntimeImages, runtime: RuntimeInfo) -> SdkState:
    """The runtime's debugger (`lamina runtimes`): "ready", "on first use" (installed the
    first time an environment is debugged), "built in" (Node's inspector), or "none"."""
    if runtime.family is Family.NODE:
        return SdkState("built in", "Node.js inspector")
    image = images.image_dir(runtime)
    if runtime.family is not Family.PYTHON or image is None:
        return SdkState("none")
    if _marker_of(image / DEBUGGER_DIR) == DEBUGPY:
        return SdkState("ready", DEBUGPY)
    return SdkState("on first use", DEBUGPY)


def _marker_of(directory: Path) -> str | None:
    try:
        return (directory / _MARKER).read_text()
    except OSError:
        return None


class InstallError(Exception):
    pass


def _pip_command(
    runtime: RuntimeInfo, target: Path, packages: tuple[str, ...] | None = None
) -> list[str]:
    # The server's own pip, told which Python the packages are for: the runtime's
    # interpreter may have no pip (Debian's), and boto3 and its dependencies are pure-Python
    # wheels, so binary-only resolution for the runtime's version gives the right set.
    minor = ".".join(runtime.version.split(".")[:2])
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--only-binary=:all:",
        "--python-version",
        minor,
        "--target",
        str(target),
        *(packages if packages is not None else sdk_packages(runtime)),
    ]


def _npm_command(npm: str, runtime: RuntimeInfo, prefix: Path) -> list[str]:
    return [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--omit=dev",
        "--no-update-notifier",
        *NODE_SDK,
    ]


async def _run(name: str, tool: str, argv: list[str]) -> None:
    """Run an installer, its output line by line into the server log (the progress)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_PROGRESS_BAR"] = "off"
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd="/",
    )
    assert proc.stdout is not None
    tail: list[str] = []
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("runtime %s: %s", name, line)
                tail = [*tail[-4:], line]
        status = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if status != 0:
        raise InstallError(f"{tool} exited {status}: {' / '.join(tail[-2:])}")


def _interpreter_names(runtime: RuntimeInfo) -> list[str]:
    if runtime.family is Family.PYTHON:
        minor = ".".join(runtime.version.split(".")[:2])
        return [f"python{minor}", "python3", "python"]
    return ["node"]


def _symlink(link: Path, target: str) -> None:
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _marker(image: Path) -> str | None:
    try:
        return (image / "lib" / _MARKER).read_text()
    except OSError:
        return None


def _installed_state(image: Path) -> SdkState:
    lib = image / "lib"
    found = []
    for dist in sorted(lib.glob("python*/site-packages/boto3-*.dist-info")):
        found.append(dist.name.removesuffix(".dist-info").replace("-", " "))
    clients = lib / "node_modules" / "@aws-sdk"
    if clients.is_dir():
        found.append(f"AWS SDK for JavaScript v3 ({len(list(clients.iterdir()))} packages)")
    return SdkState("ready", ", ".join(found) or (_marker(image) or ""))


def _lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _open_up(tree: Path) -> None:
    """Make `tree` readable (and its directories and executables usable) by every user."""
    for here, _dirs, files in os.walk(tree):  # (symlinked directories are not entered)
        os.chmod(here, 0o755)
        for name in files:
            path = os.path.join(here, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & 0o100 else 0o644)


def _swap(staging: Path, lib: Path, marker: str) -> None:
    """Mark `staging` as holding `marker`'s packages and put it in place of `lib` (a rename
    each: a sandbox mounting the image in between sees the old SDK or the new one, never half
    of one)."""
    (staging / _MARKER).write_text(marker)
    os.chmod(staging / _MARKER, 0o644)
    os.chmod(staging, 0o755)
    old = lib.with_name(f"lib.old-{os.getpid()}")
    if lib.exists():
        os.rename(lib, old)
    os.rename(staging, lib)
    shutil.rmtree(old, ignore_errors=True)
