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
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "zygote" / "init.c"
#: seconds the compiler may take (at server start, once per source version)
BUILD_TIMEOUT_S = 60


def native_init(directory: Path) -> str | None:
    """The path of the built init (built now if need be), or None to keep the Python one."""
    try:
        source = SOURCE.read_bytes()
    except OSError:
        return None
    target = directory / f"init-{hashlib.sha256(source).hexdigest()[:16]}"
    if os.access(target, os.X_OK):
        return str(target)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: sandboxes keep their Python init (~1.7 MB more each)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    argv = [compiler, "-O2", "-o", str(partial), str(SOURCE)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            log.warning("building the sandbox init failed, keeping the Python one: %s", done.stderr)
            return None
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("building the sandbox init failed, keeping the Python one: %s", e)
        return None
    finally:
        partial.unlink(missing_ok=True)
    return str(target)
