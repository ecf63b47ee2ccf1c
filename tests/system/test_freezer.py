"""The cgroup freezer on this host, for real (`lamina.sandbox._cgroups`): a frozen cgroup's
processes stop, thaw resumes them, a frozen cgroup can still be killed and removed, and on v1
an empty anchor cgroup stays frozen while the tree lives (so that freezing one environment
does not patch kernel text each time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.sandbox._cgroups import CgroupTree

pytestmark = pytest.mark.system

COUNTER = "import itertools,sys\nfor n in itertools.count():\n    print(n, flush=True)\n"


@pytest.fixture
def tree() -> Iterator[CgroupTree]:
    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups)")
    tree = CgroupTree.create()
    yield tree
    tree.remove()


def test_freeze_stops_and_thaw_resumes(tree: CgroupTree, tmp_path: Path) -> None:
    assert "freezer=" in tree.versions, tree.versions
    cgroup = tree.make("freezer-test")
    assert cgroup.can_freeze
    out = tmp_path / "out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-c", COUNTER], stdout=sink)
    try:
        for procs in cgroup.procs_files:
            Path(procs).write_text(str(proc.pid))
        time.sleep(0.2)
        cgroup.freeze()
        time.sleep(0.1)  # the kernel freezes asynchronously
        frozen_at = out.stat().st_size
        time.sleep(0.3)
        assert out.stat().st_size == frozen_at, "a frozen process kept writing"
        cgroup.thaw()
        time.sleep(0.2)
        assert out.stat().st_size > frozen_at, "a thawed process did not resume"
        # Killed while frozen: it dies (v1 needs the thaw `kill_all` does first).
        cgroup.freeze()
        cgroup.kill_all()
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()
        cgroup.remove()


def test_v1_anchor_stays_frozen(tree: CgroupTree) -> None:
    freezer_dirs = [d for d in tree.dirs if "freezer" in str(d)]
    if not freezer_dirs:
        pytest.skip("no v1 freezer on this host")
    anchor = freezer_dirs[0] / "frozen-anchor"
    assert (anchor / "freezer.state").read_text().strip() in (
        "FROZEN",
        "FREEZING",
    )
    assert (anchor / "cgroup.procs").read_text() == ""


#: a "server" that leaves a frozen environment behind when it is killed with SIGKILL
_DYING_SERVER = """
import subprocess, sys, time
from lamina.sandbox._cgroups import CgroupTree
tree = CgroupTree.create()
cgroup = tree.make("left-behind")
env = subprocess.Popen(["sleep", "600"], start_new_session=True)
for procs in cgroup.procs_files:
    open(procs, "w").write(str(env.pid))
cgroup.freeze()
print(env.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_servers_frozen_environments_are_killed_and_swept() -> None:
    """A server killed with SIGKILL leaves its frozen environments behind (a frozen process
    does not act on its parent's death): the next server's tree thaws, kills and removes
    them, and does not spend seconds retrying cgroups that cannot be removed."""
    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups)")
    server = subprocess.Popen([sys.executable, "-c", _DYING_SERVER], stdout=subprocess.PIPE)
    assert server.stdout is not None
    env_pid = int(server.stdout.readline())
    server.kill()
    server.wait()
    server.stdout.close()
    time.sleep(0.2)
    assert Path(f"/proc/{env_pid}").exists(), "the frozen environment outlived its server"
    started = time.monotonic()
    tree = CgroupTree.create()
    try:
        assert time.monotonic() - started < 3.0
        deadline = time.monotonic() + 5
        while Path(f"/proc/{env_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        state = Path(f"/proc/{env_pid}/stat")
        assert not state.exists() or state.read_text().split()[2] == "Z", "not killed"
        left = [
            d for d in tree.dirs for d in d.parent.iterdir() if d.name == f"lamina-{server.pid}"
        ]
        assert left == [], left
    finally:
        tree.remove()
