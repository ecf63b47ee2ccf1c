"""The Java runtime client's JSON reader and POJO mapper, checked in Java: a check program
compiled with the client's sources (same package) and run on the host's JDK."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lamina.runtimes.java.build import SOURCE_DIR
from lamina.runtimes.java.jdk import best_by_major, find_jdks

CHECKS = Path(__file__).parent / "java"
_JDKS = [j for j in best_by_major(find_jdks()).values() if j.has_javac]


@pytest.mark.skipif(not _JDKS, reason="no JDK on this host")
def test_json_and_pojo_mapping(tmp_path: Path) -> None:
    jdk = min(_JDKS, key=lambda j: j.major)
    sources = [*SOURCE_DIR.rglob("*.java"), *CHECKS.rglob("*.java")]
    subprocess.run(
        [str(jdk.javac), "-nowarn", "-d", str(tmp_path), *map(str, sources)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    run = subprocess.run(
        [str(jdk.java), "-cp", str(tmp_path), "lamina.runtime.MapperCheck"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok ")
    assert int(run.stdout.split()[1]) > 40
