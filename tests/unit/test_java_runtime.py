"""The Java runtimes' host side: finding JDKs from their `release` files, which runtimes a
host can run (and why not), the launcher's JVM flags, and building the client."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError
from lamina.runtimes import java
from lamina.runtimes.catalog import RuntimeCatalog
from lamina.runtimes.java.build import JAR_NAME, JavaBuildError, JavaRuntimeBuild, launcher
from lamina.runtimes.java.jdk import Jdk, best_by_major, major_of, read_release


def fake_jdk(root: Path, version: str, javac: bool = True, java_script: str = "") -> Jdk:
    """A JDK-shaped directory: `release`, bin/java (printing its arguments, or the script
    given) and, for a JDK, bin/javac."""
    home = root / f"jdk-{version}-{'jdk' if javac else 'jre'}"
    (home / "bin").mkdir(parents=True)
    (home / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n')
    script = java_script or 'for a in "$@"; do printf "%s\\n" "$a"; done\n'
    for tool in ("java", "javac") if javac else ("java",):
        path = home / "bin" / tool
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)
    jdk = read_release(home)
    assert jdk is not None
    return jdk


@pytest.mark.parametrize(
    ("version", "major"),
    [("1.8.0_452", 8), ("11.0.2", 11), ("17.0.15", 17), ("21", 21), ("25-ea", 25), ("x", None)],
)
def test_major_of(version: str, major: int | None) -> None:
    assert major_of(version) == major


def test_read_release(tmp_path: Path) -> None:
    jdk = fake_jdk(tmp_path, "17.0.15")
    assert (jdk.major, jdk.version, jdk.has_javac) == (17, "17.0.15", True)
    assert jdk.java == jdk.home / "bin" / "java"
    # Not a JDK: no release file, or no bin/java.
    assert read_release(tmp_path) is None
    (tmp_path / "nojava").mkdir()
    (tmp_path / "nojava" / "release").write_text('JAVA_VERSION="21"\n')
    assert read_release(tmp_path / "nojava") is None


def test_a_jdk_is_preferred_to_a_jre(tmp_path: Path) -> None:
    jre = fake_jdk(tmp_path, "21.0.1", javac=False)
    jdk = fake_jdk(tmp_path, "21.0.2")
    assert best_by_major([jre, jdk])[21] == jdk
    assert best_by_major([jdk, jre])[21] == jdk


def test_which_runtimes_and_why_not(tmp_path: Path) -> None:
    jdks = [fake_jdk(tmp_path, "17.0.9"), fake_jdk(tmp_path, "21.0.1", javac=False)]
    found, missing = java.discover(tmp_path / "cache", found_jdks=jdks)
    assert sorted(r.name for r in found) == ["java17", "java17.al2023"]
    # Both java17 runtimes share one build (one directory) of the JDK 17 client.
    assert len({r.runtime_dir for r in found}) == 1
    assert missing["java25"] == "java25 needs a JDK 25; this host has 17"
    assert missing["java21"] == (
        f"java21 needs a JDK 21 with javac; this host has only a Java 21 runtime at {jdks[1].home}"
    )
    # Every runtime Lamina implements is either runnable or said why not.
    assert {r.name for r in found} | set(missing) == set(java.JAVA_RUNTIMES)


def test_create_refuses_a_runtime_whose_jdk_is_missing() -> None:
    catalog = RuntimeCatalog([], {"java21": "java21 needs a JDK 21; this host has 17"})
    with pytest.raises(InvalidParameterValueError, match="java21 needs a JDK 21; this host has 17"):
        v.runtime_available("java21", catalog)
    assert catalog.all_unavailable() == {"java21": "java21 needs a JDK 21; this host has 17"}


def run_launcher(tmp_path: Path, jdk: Jdk, env: dict[str, str]) -> list[str]:
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(exist_ok=True)
    bootstrap = runtime_dir / "bootstrap"
    bootstrap.write_text(launcher(jdk))
    bootstrap.chmod(0o755)
    out = subprocess.run(
        [str(bootstrap)], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_launcher_sizes_the_heap_and_uses_lambdas_flags(tmp_path: Path) -> None:
    jdk = fake_jdk(tmp_path, "17.0.15")
    args = run_launcher(tmp_path, jdk, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"})
    # Lambda's heap: 85% of MemorySize, in KiB (512 MB -> 445645k, as Lambda's java17 has).
    assert args[0] == "-XX:MaxHeapSize=445645k"
    for flag in ("-XX:+UseSerialGC", "-Xshare:auto", "-XX:TieredStopAtLevel=1"):
        assert flag in args
    assert args[-3:] == ["-cp", f"{tmp_path}/runtime/lib/{JAR_NAME}", "lamina.runtime.Main"]
    assert not any(a.startswith("-Djava.io.tmpdir") for a in args)
    args = run_launcher(
        tmp_path, jdk, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240", "TMPDIR": "/x/tmp"}
    )
    assert args[0] == "-XX:MaxHeapSize=8912896k"
    assert "-Djava.io.tmpdir=/x/tmp" in args


def test_java_11_keeps_the_jvms_tiered_defaults(tmp_path: Path) -> None:
    args = run_launcher(
        tmp_path, fake_jdk(tmp_path, "11.0.20"), {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}
    )
    assert args[0] == "-XX:MaxHeapSize=111411k"
    assert not any("Tiered" in a for a in args)


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    jdk = fake_jdk(tmp_path, "17.0.1", java_script='echo "error: no compiler here" >&2\nexit 2\n')
    build = JavaRuntimeBuild(jdk, tmp_path / "cache")
    with pytest.raises(JavaBuildError, match="no compiler here"):
        build.ensure()
    assert not build.directory.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []


def test_the_client_is_compiled_once_per_jdk_and_kept(tmp_path: Path) -> None:
    """ensure() runs javac the first time only; a later server on the same data dir (a new
    builder) finds the build and reuses it: no cold start waits for javac."""
    calls = tmp_path / "javac-calls"
    jdk = fake_jdk(tmp_path, "17.0.2", java_script=f'echo run >> "{calls}"\n')
    cache = tmp_path / "cache"
    build = JavaRuntimeBuild(jdk, cache)
    build.ensure()
    build.ensure()
    assert (build.directory / "bootstrap").exists()
    assert (build.directory / "lib" / JAR_NAME).exists()
    assert os.access(build.directory / "bootstrap", os.X_OK)
    JavaRuntimeBuild(jdk, cache).ensure()
    assert calls.read_text().count("run") == 1
    # Another JDK build (an upgrade) is built apart.
    other = fake_jdk(tmp_path / "newer", "17.0.3", java_script=f'echo run >> "{calls}"\n')
    newer = JavaRuntimeBuild(other, cache)
    assert newer.directory != build.directory
    newer.ensure()
    assert calls.read_text().count("run") == 2
