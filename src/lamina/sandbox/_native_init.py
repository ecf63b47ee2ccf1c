"""A sandbox's init (its PID 1) as a small native program, built once where a C compiler is.

Every namespace sandbox has an init that reaps orphans until the runtime exits, then exits as
it did (see `zygote.Child.be_init`). Forked from the Python zygote, that init held ~1.7 MB of
memory no other process shared: the pages it had in common only with its runtime, left to
it alone as the runtime wrote its own copies (CPython writes a reference count at every
touch). Beside a thousand idle environments that was 1.7 GB. The same loop in C, exec'd by
the init once it has dropped its privileges, holds some 50 KB.

Built from `init.c` (beside the zygote) with the host's `cc` into the backend's directory,
named by the source's hash, the first time a server starts; without a compiler (or if the
build fails) the Python init stays, which behaves the same.

Linked statically where the host has a static C library: an init exec'd inside a
container-image function's sandbox finds that image's dynamic loader and C library at the
standard paths (or none at all, or another C library), not the host's. A dynamic build serves
zip functions only (whose sandboxes show the host's /lib); image sandboxes then keep the
Python init. (Static, it also holds less memory of its own: ~44 KB against ~92 KB.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "zygote" / "init.c"
#: seconds the compiler may take (at server start, once per source version)
BUILD_TIMEOUT_S = 60


@dataclass(frozen=True)
class NativeInit:
    path: str
    #: linked statically: it runs in any root filesystem (a container image's too)
    static: bool


def native_init(directory: Path) -> NativeInit | None:
    """The built init (built now if need be, static if the host can), or None to keep the
    Python one."""
    try:
        source = SOURCE.read_bytes()
    except OSError:
        return None
    name = f"init-{hashlib.sha256(source).hexdigest()[:16]}"
    static, dynamic = directory / f"{name}-static", directory / name
    for target, is_static in ((static, True), (dynamic, False)):
        if os.access(target, os.X_OK):
            return NativeInit(str(target), is_static)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: sandboxes keep their Python init (~1.7 MB more each)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    if _build(compiler, static, ["-static"], quiet=True):
        return NativeInit(str(static), True)
    log.info("no static C library: container-image sandboxes keep their Python init")
    if _build(compiler, dynamic, [], quiet=False):
        return NativeInit(str(dynamic), False)
    return None


def _build(compiler: str, target: Path, flags: list[str], quiet: bool) -> bool:
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    argv = [compiler, "-O2", *flags, "-o", str(partial), str(SOURCE)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            if not quiet:
                log.warning(
                    "building the sandbox init failed, keeping the Python one: %s", done.stderr
                )
            return False
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("building the sandbox init failed, keeping the Python one: %s", e)
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True
