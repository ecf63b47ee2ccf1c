"""The sandboxes' native init (`lamina.sandbox._native_init`, `zygote/init.c`): built once,
found again, linked statically where the host can, and exiting as its runtime did (the code,
or 128 + the signal), having reaped what else it had."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.sandbox._native_init import native_init

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("init")
    built = native_init(directory)
    assert built is not None and Path(built.path).stat().st_mode & 0o777 == 0o755
    assert native_init(directory) == built, "built once, then found"
    assert [p.name for p in directory.iterdir()] == [Path(built.path).name]
    return built.path


def test_it_is_static_where_the_host_has_a_static_libc(init: str) -> None:
    # A container image's root has its own C library, or none: there only a static init runs.
    compiler = shutil.which("cc") or "cc"
    found = subprocess.run([compiler, "-print-file-name=libc.a"], capture_output=True, text=True)
    static = Path(found.stdout.strip()).is_absolute()
    assert init.endswith("-static") == static
    assert _loader(init) is None if static else _loader(init) is not None


def _loader(path: str) -> bytes | None:
    """The dynamic loader an ELF file names (its PT_INTERP), or None for a static one."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "a 64-bit ELF"
    order = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(order + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        (kind,) = struct.unpack_from(order + "I", data, at)
        if kind == 3:  # PT_INTERP
            (offset,) = struct.unpack_from(order + "Q", data, at + 8)
            (size,) = struct.unpack_from(order + "Q", data, at + 32)
            return data[offset : offset + size].rstrip(b"\0")
    return None


def run_as_init(init: str, script: str) -> int:
    """Exit status of `init` exec'd by a shell whose background jobs are its children;
    `$RUNTIME` is the one it waits for. (Each job lives a moment first: a shell may reap a
    job that ended before its `exec`, which would leave the init nothing to wait for.)"""
    return subprocess.run(["sh", "-c", f"{script}; exec {init} $RUNTIME"], timeout=30).returncode


def test_it_exits_with_the_runtimes_code(init: str) -> None:
    assert run_as_init(init, "(sleep 0.2; exit 7) & RUNTIME=$!") == 7
    assert run_as_init(init, "(sleep 0.2; exit 0) & RUNTIME=$!") == 0


def test_a_runtime_killed_by_a_signal_is_128_plus_it(init: str) -> None:
    suicide = f"{sys.executable} -c 'import os, time; time.sleep(0.2); os.kill(os.getpid(), 9)'"
    assert run_as_init(init, f"{suicide} & RUNTIME=$!") == 128 + 9


def test_other_children_are_reaped_and_do_not_end_it(init: str) -> None:
    # An extension-like child that ends first is reaped; the init waits on for the runtime.
    script = "(sleep 0.1; exit 3) & (sleep 0.4; exit 5) & RUNTIME=$!"
    assert run_as_init(init, script) == 5
