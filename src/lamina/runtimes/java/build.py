"""Lamina's Java runtime client, compiled once per JDK into a directory under the data dir.

The client is Java source shipped with Lamina (`src/` beside this file). The first time a
function needs it on a given JDK, that JDK's own javac compiles it into
`<data dir>/runtimes/java/<major>-<key>/`: `lib/lamina-java-runtime.jar` and `bootstrap`, the
launcher that starts the JVM with Lambda's flags. The key covers the JDK's exact build and
the sources, so an upgrade of either builds anew; otherwise the directory is reused across
restarts, and a cold start never waits for javac.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

from lamina.runtimes.java.jdk import Jdk

SOURCE_DIR = Path(__file__).resolve().parent / "src"
JAR_NAME = "lamina-java-runtime.jar"
MAIN_CLASS = "lamina.runtime.Main"
#: javac on a small machine: C1 only and the serial collector start it faster
_JAVAC_TIMEOUT_S = 300
# Part of the key: a change to the launcher's flags builds anew.
_LAUNCHER_VERSION = "1"


class JavaBuildError(Exception):
    """The runtime client could not be compiled for a JDK."""


def jvm_flags(major: int) -> list[str]:
    """The JVM flags Lambda's Java runtimes start with (besides the heap size, which the
    launcher computes from the function's memory).

    From Java 17 on Lambda stops tiered compilation at C1 (quick to compile, no profiling:
    short-lived functions start faster) and uses the serial collector; class data sharing is
    on where the JDK has an archive. Java 11 and older keep the JVM's tiered defaults.
    """
    flags = ["-XX:+UseSerialGC", "-Xshare:auto"]
    if major >= 17:
        flags += [
            "-XX:+TieredCompilation",
            "-XX:TieredStopAtLevel=1",
            "--add-opens=java.base/java.io=ALL-UNNAMED",
            "-XX:+ErrorFileToStderr",
        ]
    flags.append("-Djava.net.preferIPv4Stack=true")
    if major < 18:
        # Lambda's LANG is en_US.UTF-8 and its image has that locale, so its JVMs' default
        # charset is UTF-8; a host without the locale would give these JDKs ASCII. (JDK 18+
        # default to UTF-8 anyway.)
        flags.append("-Dfile.encoding=UTF-8")
    return flags


def launcher(jdk: Jdk) -> str:
    """The runtime's `bootstrap`: a POSIX shell script that execs the JVM.

    The heap is Lambda's: -XX:MaxHeapSize at 85% of AWS_LAMBDA_FUNCTION_MEMORY_SIZE (in KiB,
    rounded). JAVA_TOOL_OPTIONS needs nothing here: the JVM itself reads it from the
    environment (and says "Picked up JAVA_TOOL_OPTIONS" on stderr, as on Lambda).
    """
    flags = " ".join(jvm_flags(jdk.major))
    return (
        "#!/bin/sh\n"
        f"# Lamina's Java runtime for JDK {jdk.version} ({jdk.home}). Written by Lamina.\n"
        'mem="${AWS_LAMBDA_FUNCTION_MEMORY_SIZE:-512}"\n'
        "heap=$(( (mem * 1024 * 85 + 50) / 100 ))\n"
        "# The process backend gives each environment its own TMPDIR; the JVM reads only\n"
        "# java.io.tmpdir (Lambda's /tmp, which the namespace backend provides).\n"
        f'exec "{jdk.java}" "-XX:MaxHeapSize=${{heap}}k" {flags} '
        '${TMPDIR:+"-Djava.io.tmpdir=$TMPDIR"} '
        f'-cp "${{0%/*}}/lib/{JAR_NAME}" {MAIN_CLASS}\n'
    )


def _sources() -> list[Path]:
    return sorted(SOURCE_DIR.rglob("*.java"))


def build_key(jdk: Jdk) -> str:
    """What the built client depends on: the JDK's build and location, the sources, the
    launcher."""
    h = hashlib.sha256()
    h.update(f"{_LAUNCHER_VERSION}\0{jdk.home}\0{jdk.release}\0".encode())
    for path in _sources():
        h.update(str(path.relative_to(SOURCE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class JavaRuntimeBuild:
    """The client built for one JDK: `ensure()` makes it (once) and is cheap after."""

    def __init__(self, jdk: Jdk, cache_root: Path) -> None:
        self.jdk = jdk
        self._cache_root = cache_root
        self.directory = cache_root / f"{jdk.major}-{build_key(jdk)}"
        self._lock = threading.Lock()
        self._done = False

    @property
    def ready(self) -> bool:
        return self._done or (self.directory / "bootstrap").exists()

    def ensure(self) -> None:
        """Build the client unless it is there (blocking; thread- and process-safe)."""
        if self._done:
            return
        with self._lock:
            self._cache_root.mkdir(parents=True, exist_ok=True)
            lock_path = self._cache_root / f".{self.directory.name}.lock"
            with open(lock_path, "w") as lock:
                # Another thread, or another server on the same data dir, may have built it.
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (self.directory / "bootstrap").exists():
                    self._build()
            self._done = True

    def _build(self) -> None:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self._cache_root))
        try:
            classes = work / "classes"
            classes.mkdir()
            cmd = [
                str(self.jdk.javac),
                "-J-XX:TieredStopAtLevel=1",
                "-J-XX:+UseSerialGC",
                "-encoding",
                "UTF-8",
                "-nowarn",
                "-d",
                str(classes),
                *map(str, _sources()),
            ]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=_JAVAC_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise JavaBuildError(f"cannot run {self.jdk.javac}: {e}") from e
            if done.returncode != 0:
                detail = (done.stderr or done.stdout).strip()[-2000:]
                raise JavaBuildError(f"javac ({self.jdk.javac}) failed: {detail}")
            out = work / "runtime"
            (out / "lib").mkdir(parents=True)
            _jar(classes, out / "lib" / JAR_NAME)
            bootstrap = out / "bootstrap"
            bootstrap.write_text(launcher(self.jdk))
            # Readable by the sandbox's unprivileged user, whatever the umask.
            os.chmod(out, 0o755)
            os.chmod(out / "lib", 0o755)
            os.chmod(out / "lib" / JAR_NAME, 0o644)
            os.chmod(bootstrap, 0o755)
            os.rename(out, self.directory)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)


def _jar(classes: Path, jar: Path) -> None:
    """A jar of the compiled classes, stored (not deflated): the JVM reads them at every
    start, and inflating costs more than the few hundred KB saved."""
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nMain-Class: {MAIN_CLASS}\n")
        for path in sorted(classes.rglob("*.class")):
            zf.write(path, path.relative_to(classes).as_posix())
