"""Which Lambda runtimes this host can run, and how to start each.

Interpreters are resolved once, at start-up, to real executables: a version manager's shim
(pyenv's costs ~130 ms a start) is never used to start a runtime.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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

PYTHON_RUNTIMES: tuple[str, ...] = tuple(f"python3.{minor}" for minor in range(9, 16))

BOOTSTRAP_DIR = Path(__file__).resolve().parent
PYTHON_BOOTSTRAP = BOOTSTRAP_DIR / "python" / "bootstrap.py"


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime this host can run."""

    name: str
    executable: str
    #: LAMBDA_RUNTIME_DIR: where the runtime's own files are
    runtime_dir: Path

    def command(self) -> list[str]:
        # -B: never write bytecode into the (shared, read-only by convention) code directory.
        return [self.executable, "-B", str(PYTHON_BOOTSTRAP)]


class RuntimeCatalog:
    def __init__(self, runtimes: Iterable[RuntimeInfo]) -> None:
        self._by_name = {r.name: r for r in runtimes}

    @classmethod
    def discover(cls) -> RuntimeCatalog:
        found = []
        for name in PYTHON_RUNTIMES:
            exe = _find_python(name.removeprefix("python"))
            if exe:
                found.append(
                    RuntimeInfo(name=name, executable=exe, runtime_dir=PYTHON_BOOTSTRAP.parent)
                )
        return cls(found)

    def get(self, name: str) -> RuntimeInfo | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name, key=_runtime_sort_key)


def _runtime_sort_key(name: str) -> tuple[str, int]:
    family, _, minor = name.partition(".")
    return family, int(minor) if minor.isdigit() else 0


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


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True
