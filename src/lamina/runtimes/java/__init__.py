"""The Java managed runtimes (java8.al2 ... java25): which this host can run, and Lamina's
own runtime client for them (Java sources under `src/`, compiled per JDK by `build`).

Each runtime needs a JDK of its feature release (javac included: the client is compiled on
the host with the JDK that will run it). Nothing here imports the rest of Lamina.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lamina.runtimes.java.build import JavaRuntimeBuild
from lamina.runtimes.java.jdk import Jdk, best_by_major, find_jdks

#: The Java runtimes Lamina implements, each with the feature release of the JDK it needs.
JAVA_RUNTIMES: dict[str, int] = {
    "java8.al2": 8,
    "java8.al2023": 8,
    "java11": 11,
    "java11.al2023": 11,
    "java17": 17,
    "java17.al2023": 17,
    "java21": 21,
    "java25": 25,
}


@dataclass(frozen=True)
class JavaRuntime:
    """A Java runtime this host can run."""

    name: str
    jdk: Jdk
    #: where the built client is (or will be): LAMBDA_RUNTIME_DIR
    runtime_dir: Path
    #: builds the client if need be (blocking; cheap once built)
    prepare: Callable[[], None]


def discover(
    cache_root: Path, env: Mapping[str, str] | None = None, found_jdks: Iterable[Jdk] | None = None
) -> tuple[list[JavaRuntime], dict[str, str]]:
    """(the Java runtimes this host can run, {runtime: why not} for the others), from the
    JDKs `find_jdks` finds (or those given)."""
    jdks = best_by_major(find_jdks(env) if found_jdks is None else found_jdks)
    full = sorted(major for major, jdk in jdks.items() if jdk.has_javac)
    have = ", ".join(map(str, full)) or "none"
    builds: dict[int, JavaRuntimeBuild] = {}
    found: list[JavaRuntime] = []
    missing: dict[str, str] = {}
    for name, major in JAVA_RUNTIMES.items():
        jdk = jdks.get(major)
        if jdk is None:
            missing[name] = f"{name} needs a JDK {major}; this host has {have}"
            continue
        if not jdk.has_javac:
            missing[name] = (
                f"{name} needs a JDK {major} with javac; this host has only a Java {major} "
                f"runtime at {jdk.home}"
            )
            continue
        build = builds.get(major)
        if build is None:
            build = builds[major] = JavaRuntimeBuild(jdk, cache_root)
        found.append(JavaRuntime(name, jdk, build.directory, build.ensure))
    return found, missing
