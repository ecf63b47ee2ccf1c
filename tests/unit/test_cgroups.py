"""One environment's cgroup, on v2 and on v1 files (`lamina.sandbox._cgroups.Cgroup`).

The kernel's files are stood in for by plain files in a temporary directory: what is checked
is what Lamina writes and how it reads the kernel's answers, for the layout this machine does
not have (its controllers are on v1, so the system tests cover v1 for real).
"""

from __future__ import annotations

from pathlib import Path

from lamina.sandbox._cgroups import CPU_PERIOD_US, MB, Cgroup


def v2(tmp_path: Path) -> Cgroup:
    return Cgroup({c: (2, tmp_path) for c in ("memory", "cpu", "pids")})


def v1(tmp_path: Path) -> Cgroup:
    paths = {}
    for controller in ("memory", "cpu", "pids"):
        (tmp_path / controller).mkdir()
        paths[controller] = (1, tmp_path / controller)
    # v1 has a memory+swap limit only where swap accounting is on: here it is
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text(str(1 << 62))
    return Cgroup(paths)


def test_v2_limits(tmp_path: Path) -> None:
    cgroup = v2(tmp_path)
    assert cgroup.procs_files == [str(tmp_path / "cgroup.procs")]
    cgroup.limit_memory(256, 512)
    assert (tmp_path / "memory.max").read_text() == str(768 * MB)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    cgroup.limit_cpu(1769)
    assert (tmp_path / "cpu.max").read_text() == f"{CPU_PERIOD_US} {CPU_PERIOD_US}"
    cgroup.limit_cpu(128)  # 7% of a CPU, as Lambda gives 128 MB
    quota = int((tmp_path / "cpu.max").read_text().split()[0])
    assert quota == 128 * CPU_PERIOD_US // 1769
    cgroup.set_pids(1024)
    assert (tmp_path / "pids.max").read_text() == "1024"


def test_v2_reads_the_kernels_answers(tmp_path: Path) -> None:
    cgroup = v2(tmp_path)
    assert cgroup.oom_kills() == 0  # no file yet: nothing known
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_kills() == 1
    (tmp_path / "memory.stat").write_text("anon 4096\nfile 8192\nshmem 1048576\n")
    assert cgroup.anon_bytes() == 4096
    (tmp_path / "memory.peak").write_text("123456789\n")
    assert cgroup.peak_bytes() == 123456789
    (tmp_path / "memory.current").write_text("2048\n")
    assert cgroup.usage_bytes() == 2048


def test_v1_limits_memory_and_memory_plus_swap(tmp_path: Path) -> None:
    cgroup = v1(tmp_path)
    mem = tmp_path / "memory"
    cgroup.limit_memory(128, 512)
    assert (mem / "memory.limit_in_bytes").read_text() == str(640 * MB)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(640 * MB)
    # A new limit is written to both (in the order the kernel accepts: memsw first when
    # raising, last when lowering; plain files cannot show the order).
    (mem / "memory.limit_in_bytes").unlink()
    (mem / "memory.memsw.limit_in_bytes").unlink()
    cgroup.limit_memory(1024, 512)
    for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        assert (mem / name).read_text() == str(1536 * MB)
    cgroup.limit_cpu(3538)
    assert (tmp_path / "cpu" / "cpu.cfs_quota_us").read_text() == str(2 * CPU_PERIOD_US)
    assert (tmp_path / "cpu" / "cpu.cfs_period_us").read_text() == str(CPU_PERIOD_US)


def test_v1_reads_the_kernels_answers(tmp_path: Path) -> None:
    cgroup = v1(tmp_path)
    mem = tmp_path / "memory"
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroup.oom_kills() == 2
    (mem / "memory.stat").write_text("cache 100\nrss 5000\nrss_huge 0\nshmem 7\n")
    assert cgroup.anon_bytes() == 5000


def test_a_claim_like_the_pool_default_writes_nothing(tmp_path: Path) -> None:
    cgroup = v2(tmp_path)
    cgroup.limit_memory(128, 512)
    (tmp_path / "memory.max").unlink()
    cgroup.limit_memory(128, 512)
    assert not (tmp_path / "memory.max").exists()
    cgroup.limit_memory(256, 512)
    assert (tmp_path / "memory.max").read_text() == str(768 * MB)


def test_freezer_writes_v2_and_v1_values(tmp_path: Path) -> None:
    (tmp_path / "cgroup.freeze").write_text("0")
    cgroup = Cgroup({c: (2, tmp_path) for c in ("memory", "cpu", "pids", "freezer")})
    cgroup.open_freezer()
    assert cgroup.can_freeze
    cgroup.freeze()
    assert (tmp_path / "cgroup.freeze").read_text().startswith("1")

    base = tmp_path / "v1"
    base.mkdir()
    (base / "freezer.state").write_text("")
    v1_cgroup = Cgroup({c: (1, base) for c in ("memory", "cpu", "pids", "freezer")})
    v1_cgroup.open_freezer()
    v1_cgroup.freeze()
    assert (base / "freezer.state").read_text().startswith("FROZEN")


def test_no_freezer_means_no_freezing(tmp_path: Path) -> None:
    cgroup = v1(tmp_path)
    cgroup.open_freezer()
    assert not cgroup.can_freeze
    cgroup.freeze()  # nothing to write to, and no error
    cgroup.thaw()
