"""Which Lambda runtimes this host can run, and how to start each.

Interpreters are resolved once, at start-up, to real executables: a version manager's shim
(pyenv's costs ~130 ms a start) is never used to start a runtime.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lamina.runtimes import java

#: Every runtime identifier Lambda's API knows (botocore's `Runtime` enum).
LAMBDA_RUNTIMES: frozenset[str] = frozenset(
    [
        "nodejs",
        "nodejs4.3",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "nodejs18.x",
        "nodejs20.x",
        "nodejs22.x",
        "nodejs24.x",
        "nodejs26.x",
        "java8",
        "java8.al2",
        "java11",
        "java17",
        "java21",
        "java25",
        "java8.al2023",
        "java11.al2023",
        "java17.al2023",
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "python3.9",
        "python3.10",
        "python3.11",
        "python3.12",
        "python3.13",
        "python3.14",
        "python3.15",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet6",
        "dotnet8",
        "dotnet10",
        "nodejs4.3-edge",
        "go1.x",
        "ruby2.5",
        "ruby2.7",
        "ruby3.2",
        "ruby3.3",
        "ruby3.4",
        "ruby4.0",
        "provided",
        "provided.al2",
        "provided.al2023",
        "custom",
    ]
)

#: Runtimes Lambda no longer accepts for new functions.
DEPRECATED_RUNTIMES: frozenset[str] = frozenset(
    [
        "nodejs",
        "nodejs4.3",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "nodejs4.3-edge",
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet6",
        "ruby2.5",
        "ruby2.7",
        "go1.x",
        "java8",
    ]
)

PYTHON_RUNTIMES: tuple[str, ...] = tuple(f"python3.{minor}" for minor in range(9, 15))
#: nodejs24.x onwards refuse callback-style handlers (the bootstrap applies that rule)
NODE_RUNTIMES: tuple[str, ...] = ("nodejs18.x", "nodejs20.x", "nodejs22.x", "nodejs24.x")
PROVIDED_RUNTIMES: tuple[str, ...] = ("provided", "provided.al2", "provided.al2023")

BOOTSTRAP_DIR = Path(__file__).resolve().parent
PYTHON_BOOTSTRAP = BOOTSTRAP_DIR / "python" / "bootstrap.py"
NODE_BOOTSTRAP = BOOTSTRAP_DIR / "node" / "bootstrap.mjs"


class Family(StrEnum):
    PYTHON = "python"
    NODE = "node"
    PROVIDED = "provided"
    JAVA = "java"


#: The runtime families Lamina implements, by the prefix of Lambda's runtime identifiers. A
#: runtime of any other family (ruby, dotnet, ...) is refused as one
#: Lamina does not implement, whatever the host has installed. A new family adds its prefix
#: here, its members to `RuntimeCatalog.discover`, and its bootstrap beside the others.
IMPLEMENTED_FAMILIES: dict[str, Family] = {
    "python": Family.PYTHON,
    "nodejs": Family.NODE,
    "provided": Family.PROVIDED,
    "java": Family.JAVA,
}


def implemented_family(runtime: str) -> Family | None:
    """The family of a Lambda runtime identifier, if Lamina implements it."""
    for prefix, family in IMPLEMENTED_FAMILIES.items():
        if runtime.startswith(prefix):
            return family
    return None


#: Lambda's name for each machine architecture Linux reports
_LAMBDA_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
#: binfmt_misc handlers that run the other architecture's binaries (qemu-user)
_QEMU = {"arm64": "qemu-aarch64", "x86_64": "qemu-x86_64"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def host_architectures(binfmt_dir: Path = BINFMT_DIR) -> dict[str, str]:
    """The Lambda architectures this host can run, each with how: "native", or
    "qemu-user (binfmt_misc)" where an enabled qemu handler runs the other one's binaries."""
    native = _LAMBDA_ARCH.get(platform.machine().lower())
    found = {native: "native"} if native else {}
    for arch, handler in _QEMU.items():
        if arch in found:
            continue
        try:
            status = (binfmt_dir / handler).read_text()
        except OSError:
            continue
        if status.splitlines()[:1] == ["enabled"]:
            found[arch] = "qemu-user (binfmt_misc)"
    return found


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime this host can run."""

    name: str
    #: the interpreter (python, node); empty for custom runtimes, whose code is the runtime
    executable: str
    #: LAMBDA_RUNTIME_DIR: where the runtime's own files are
    runtime_dir: Path
    family: Family = Family.PYTHON
    #: the interpreter's version, as it reports it ("3.11.2", "20.20.2")
    version: str = ""
    #: makes what the runtime needs before its first start (blocking, cheap once done), if
    #: anything: Lamina's Java client is compiled per JDK
    prepare: Callable[[], None] | None = field(default=None, compare=False)

    def command(self, task_root: Path, seen_as: tuple[Path, Path] | None = None) -> list[str]:
        """The argv that starts this runtime for code unpacked at `task_root` (on the host).

        `seen_as` is (code, runtime dir) as the runtime sees them, where a sandbox mounts them
        elsewhere (/var/task and /var/runtime, as on Lambda).
        """
        task_in, runtime_in = seen_as or (task_root, self.runtime_dir)
        if self.family is Family.PYTHON:
            # -B: never write bytecode into the (shared, read-only by convention) code dir.
            # -S: no `site`, so none of the host's site-packages (Lambda's Python sees only
            # the standard library, the runtime's own directories and the function's).
            return [self.executable, "-B", "-S", str(runtime_in / PYTHON_BOOTSTRAP.name)]
        if self.family is Family.NODE:
            return [self.executable, str(runtime_in / NODE_BOOTSTRAP.name)]
        if self.family is Family.JAVA:
            # The built client's launcher, which execs the JVM with Lambda's flags.
            return [str(runtime_in / "bootstrap")]
        if _wants_amazon_linux_sh(task_root / "bootstrap"):
            # Lambda's /bin/sh is bash (Amazon Linux), and custom-runtime bootstraps written
            # for it use bash syntax (AWS's own tutorial does). Where the host's /bin/sh is
            # another shell, run them with bash, as they would run on Lambda.
            return [_BASH, str(task_in / "bootstrap")]
        return [str(task_in / "bootstrap")]


class RuntimeCatalog:
    def __init__(
        self,
        runtimes: Iterable[RuntimeInfo],
        unavailable: Mapping[str, str] | None = None,
        architectures: dict[str, str] | None = None,
    ) -> None:
        self._by_name = {r.name: r for r in runtimes}
        #: runtimes Lamina implements that this host cannot run, each with what is missing
        self._unavailable = dict(unavailable or {})
        #: the Lambda architectures this host runs, each with how (see `host_architectures`)
        self.architectures = architectures if architectures is not None else host_architectures()

    @classmethod
    def discover(cls, data_dir: Path | None = None) -> RuntimeCatalog:
        """What this host can run. Java runtimes need `data_dir` (their client is built
        there); without it none is listed."""
        found = []
        unavailable: dict[str, str] = {}
        for name in PYTHON_RUNTIMES:
            version = name.removeprefix("python")
            exe = _find_python(version)
            if not exe:
                unavailable[name] = (
                    f"no python{version} interpreter (looked in /usr/local/bin, /usr/bin, PATH "
                    "and pyenv's versions)"
                )
            else:
                found.append(
                    RuntimeInfo(
                        name=name,
                        executable=exe,
                        runtime_dir=PYTHON_BOOTSTRAP.parent,
                        family=Family.PYTHON,
                        version=version,
                    )
                )
        for exe, version in _find_nodes():
            name = f"nodejs{version.split('.')[0]}.x"
            if name in NODE_RUNTIMES and all(r.name != name for r in found):
                found.append(
                    RuntimeInfo(
                        name=name,
                        executable=exe,
                        runtime_dir=NODE_BOOTSTRAP.parent,
                        family=Family.NODE,
                        version=version,
                    )
                )
        for name in NODE_RUNTIMES:
            if all(r.name != name for r in found):
                major = name.removeprefix("nodejs").removesuffix(".x")
                unavailable[name] = (
                    f"no Node.js {major} (`node` {major}.x in /usr/local/bin, /usr/bin, PATH or "
                    "nvm's versions)"
                )
        for name in PROVIDED_RUNTIMES:
            # The function's own `bootstrap` is the runtime: nothing to find on the host.
            found.append(
                RuntimeInfo(
                    name=name, executable="", runtime_dir=BOOTSTRAP_DIR, family=Family.PROVIDED
                )
            )
        if data_dir is not None:
            javas, missing = java.discover(data_dir / "runtimes" / "java")
            unavailable.update(missing)
            found += [
                RuntimeInfo(
                    name=j.name,
                    executable=str(j.jdk.java),
                    runtime_dir=j.runtime_dir,
                    family=Family.JAVA,
                    version=j.jdk.version,
                    prepare=j.prepare,
                )
                for j in javas
            ]
        return cls(found, unavailable)

    def get(self, name: str) -> RuntimeInfo | None:
        return self._by_name.get(name)

    def unavailable(self, name: str) -> str | None:
        """Why this host cannot run a runtime Lamina implements (None: it can, or Lamina does
        not implement it)."""
        return self._unavailable.get(name)

    def all_unavailable(self) -> dict[str, str]:
        return {n: self._unavailable[n] for n in sorted(self._unavailable, key=_runtime_sort_key)}

    def names(self) -> list[str]:
        return sorted(self._by_name, key=_runtime_sort_key)

    def all(self) -> list[RuntimeInfo]:
        return [self._by_name[n] for n in self.names()]


def _runtime_sort_key(name: str) -> tuple[str, int, str]:
    # The leading letters: "java" for java8.al2 and java17 alike, so they sort by release.
    family = name[: len(name) - len(name.lstrip("abcdefghijklmnopqrstuvwxyz"))]
    digits = "".join(ch if ch.isdigit() else " " for ch in name).split()
    number = int(digits[-1]) if family == "python" and digits else int(digits[0]) if digits else 0
    return family, number, name


def _find_python(version: str) -> str | None:
    """A real `pythonX.Y` executable: system locations first, then PATH, then pyenv's versions."""
    exe = f"python{version}"
    dirs = ["/usr/local/bin", "/usr/bin"]
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    dirs += sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin")))
    for d in dirs:
        candidate = os.path.join(d, exe)
        if not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            continue
        real = os.path.realpath(candidate)
        if _is_script(real):  # a shim or wrapper script, not the interpreter
            continue
        return real
    return None


def _find_nodes() -> list[tuple[str, str]]:
    """Real `node` executables on the host, each with its version (asked once, at start-up)."""
    dirs = ["/usr/local/bin", "/usr/bin"]
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    nvm = os.environ.get("NVM_DIR", os.path.expanduser("~/.nvm"))
    dirs += sorted(glob.glob(os.path.join(nvm, "versions", "node", "*", "bin")))
    seen: set[str] = set()
    found = []
    for d in dirs:
        candidate = os.path.join(d, "node")
        if not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            continue
        real = os.path.realpath(candidate)
        if real in seen or _is_script(real):
            continue
        seen.add(real)
        try:
            out = subprocess.run(
                [real, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out.startswith("v"):
            found.append((real, out[1:]))
    return found


_BASH = shutil.which("bash") or "/bin/bash"
_SH_IS_BASH = os.path.basename(os.path.realpath("/bin/sh")) == "bash"


def _wants_amazon_linux_sh(bootstrap: Path) -> bool:
    if _SH_IS_BASH:
        return False
    try:
        with open(bootstrap, "rb") as f:
            first = f.readline(128)
    except OSError:
        return False
    return first.split()[:1] in ([b"#!/bin/sh"], [b"#!/usr/bin/sh"])


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True
