"""The JDKs installed on this host, found once at start-up without running any of them.

Each candidate home (JAVA_HOME, every directory under /usr/lib/jvm and /usr/local/lib/jvm,
and the JDK behind `java` on PATH) is resolved to its real path and identified by its
`release` file, which every JDK since 8 ships: reading it costs microseconds, where asking
`java -version` would start a JVM per JDK.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_SEARCH = ("/usr/lib/jvm/*", "/usr/local/lib/jvm/*")


@dataclass(frozen=True)
class Jdk:
    """One Java installation."""

    #: the installation's real directory (the one holding `release` and bin/java)
    home: Path
    #: the feature release: 8, 11, 17, 21, 25...
    major: int
    #: JAVA_VERSION as `release` gives it ("17.0.15", "1.8.0_452", "25.0.3")
    version: str
    #: the whole `release` file: it names the exact build, so it keys what is built for it
    release: str

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"

    @property
    def javac(self) -> Path:
        return self.home / "bin" / "javac"

    @property
    def has_javac(self) -> bool:
        """A JDK (with its compiler), not only a runtime (JRE)."""
        return os.access(self.javac, os.X_OK)


def major_of(version: str) -> int | None:
    """The feature release of a JAVA_VERSION: "1.8.0_452" is 8, "17.0.15" is 17, "25" 25."""
    head = version.strip().strip('"')
    parts = head.split(".")
    try:
        if parts[0] == "1" and len(parts) > 1:
            return int(parts[1])
        return int("".join(ch for ch in parts[0] if ch.isdigit()) or "x")
    except ValueError:
        return None


def read_release(home: Path) -> Jdk | None:
    """The JDK at `home`, from its `release` file (None if it is not one)."""
    try:
        text = (home / "release").read_text(errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    version = fields.get("JAVA_VERSION", "")
    major = major_of(version) if version else None
    if major is None or not os.access(home / "bin" / "java", os.X_OK):
        return None
    return Jdk(home=home, major=major, version=version, release=text)


def _candidates(env: Mapping[str, str]) -> Iterable[str]:
    java_home = env.get("JAVA_HOME")
    if java_home:
        yield java_home
    for pattern in _SEARCH:
        yield from sorted(glob.glob(pattern))
    on_path = shutil.which("java", path=env.get("PATH"))
    if on_path:
        # .../bin/java (through the alternatives links) -> the home above bin/
        yield str(Path(os.path.realpath(on_path)).parent.parent)


def find_jdks(env: Mapping[str, str] | None = None) -> list[Jdk]:
    """Every Java installation found, each once (by real path), JAVA_HOME's first."""
    seen: set[Path] = set()
    found = []
    for candidate in _candidates(os.environ if env is None else env):
        home = Path(os.path.realpath(candidate))
        if home in seen:
            continue
        seen.add(home)
        jdk = read_release(home)
        if jdk is not None:
            found.append(jdk)
    return found


def best_by_major(jdks: Iterable[Jdk]) -> dict[int, Jdk]:
    """One installation per feature release: a JDK over a JRE, else the first found (so
    JAVA_HOME's wins)."""
    best: dict[int, Jdk] = {}
    for jdk in jdks:
        held = best.get(jdk.major)
        if held is None or (jdk.has_javac and not held.has_javac):
            best[jdk.major] = jdk
    return best
