"""One cgroup per environment, on cgroup v2 or on v1 controllers, whichever the host has.

The host may mix both (v1 `memory`, `cpu` and `pids` hierarchies beside a v2 mount holding no
controllers, as this project's CI machines do): each controller is taken from where it is
active. Lamina's cgroups live in a parent named `lamina-<server pid>`: under the server's own
cgroup on v1 (so the sandboxes stay inside whatever limit the server itself is under), at the
v2 root on v2 (v2 forbids controllers below a cgroup that holds processes). Parents left by a
server that is gone are removed at start-up.

Limits, as Lambda sets them: memory = MemorySize (plus the /tmp size, see `limit`), CPU
proportional to memory (1,769 MB = one vCPU), and a cap on processes and threads.

Freezing (as Lambda freezes an environment between invocations): the v1 `freezer` controller
where it is mounted, else v2's `cgroup.freeze` (which every non-root v2 cgroup has, with or
without controllers). A host with neither gets no freezing; everything else still works.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "cpu", "pids")
#: optional: environments are frozen between invocations where the host has it
FREEZER = "freezer"
#: an empty v1 freezer cgroup kept frozen while the server runs (see `CgroupTree.create`)
_FREEZER_ANCHOR = "frozen-anchor"
MB = 1024 * 1024
#: Lambda: 1,769 MB of memory buys one vCPU
MB_PER_VCPU = 1769
CPU_PERIOD_US = 100_000
#: Lambda's limit on processes and threads in one environment
PIDS_MAX = 1024
DEFAULT_MEMORY_MB = 128
DEFAULT_TMP_MB = 512


class CgroupUnavailable(OSError):
    pass


def _mounts() -> tuple[str | None, dict[str, str]]:
    v2 = None
    v1: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            point = fields[4]
            if fstype == "cgroup2" and v2 is None:
                v2 = point
            elif fstype == "cgroup":
                for option in options.split(","):
                    if option in CONTROLLERS or option == FREEZER:
                        v1[option] = point
    return v2, v1


def _own_paths() -> tuple[str, dict[str, str]]:
    v2 = "/"
    v1: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                v2 = path
            for c in controllers.split(","):
                v1[c] = path
    return v2, v1


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass(frozen=True)
class _Place:
    controller: str
    version: int
    parent: Path


class CgroupTree:
    """Where this server makes its environments' cgroups."""

    def __init__(self, places: list[_Place]) -> None:
        self._places = places
        self.dirs = sorted({p.parent for p in places})

    @property
    def versions(self) -> str:
        return ", ".join(f"{p.controller}=v{p.version}" for p in self._places)

    @classmethod
    def probe(cls) -> None:
        """Raise `CgroupUnavailable` unless every controller Lamina needs is mounted."""
        v2_mount, v1_mounts = _mounts()
        v2_controllers: set[str] = set()
        if v2_mount is not None:
            with contextlib.suppress(OSError):
                v2_controllers = set(Path(v2_mount, "cgroup.controllers").read_text().split())
        missing = [c for c in CONTROLLERS if c not in v1_mounts and c not in v2_controllers]
        if missing:
            raise CgroupUnavailable(f"no cgroup controller {', '.join(missing)} on this host")

    @classmethod
    def create(cls) -> CgroupTree:
        v2_mount, v1_mounts = _mounts()
        _, own_v1 = _own_paths()
        name = f"lamina-{os.getpid()}"
        v2_controllers: set[str] = set()
        if v2_mount is not None:
            with contextlib.suppress(OSError):
                v2_controllers = set(Path(v2_mount, "cgroup.controllers").read_text().split())
        places = []
        for controller in CONTROLLERS:
            if controller in v1_mounts:
                base = Path(v1_mounts[controller] + own_v1.get(controller, "/"))
                places.append(_Place(controller, 1, base / name))
            elif controller in v2_controllers and v2_mount is not None:
                places.append(_Place(controller, 2, Path(v2_mount) / name))
            else:
                raise CgroupUnavailable(f"no cgroup controller {controller!r} on this host")
        freezer = _freezer_place(v2_mount, v1_mounts, own_v1, name)
        # The freezer first: a dead server's environments may be frozen there, and a frozen
        # process neither dies of its kill nor leaves its other cgroups until it is thawed.
        for place in ([freezer] if freezer is not None else []) + places:
            _sweep(place.parent.parent)
        if any(p.version == 2 for p in places):
            wanted = " ".join(f"+{p.controller}" for p in places if p.version == 2)
            assert v2_mount is not None
            _write(Path(v2_mount, "cgroup.subtree_control"), wanted)
        for d in sorted({p.parent for p in places}):
            _mkdir(d)
        if any(p.version == 2 for p in places):
            assert v2_mount is not None
            _write(Path(v2_mount) / name / "cgroup.subtree_control", wanted)
        if freezer is not None:
            try:
                _mkdir(freezer.parent)
                places.append(freezer)
            except OSError:
                pass  # optional: without it, environments are not frozen when idle
            else:
                if freezer.version == 1:
                    # The v1 freezer switches a kernel-wide static key on when the first
                    # cgroup of the host starts freezing and off when the last thaws, and
                    # patching kernel text costs ~80 us per write: every freeze and thaw of
                    # a lone idle environment would pay it. One empty cgroup kept frozen
                    # holds the key on, and a freeze or thaw costs ~1 us.
                    with contextlib.suppress(OSError):
                        anchor = freezer.parent / _FREEZER_ANCHOR
                        anchor.mkdir(exist_ok=True)
                        _write(anchor / "freezer.state", "FROZEN")
        return cls(places)

    def make(self, sandbox_id: str) -> Cgroup:
        """A cgroup for one environment (blocking: a few mkdirs)."""
        paths = {}
        for place in self._places:
            path = place.parent / sandbox_id
            _mkdir(path)
            paths[place.controller] = (place.version, path)
        cgroup = Cgroup(paths)
        cgroup.open_freezer()
        cgroup.set_pids(PIDS_MAX)
        # Lambda's defaults, so that most claims change nothing.
        cgroup.limit_memory(DEFAULT_MEMORY_MB, DEFAULT_TMP_MB)
        return cgroup

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                _write(d / _FREEZER_ANCHOR / "freezer.state", "THAWED")
            for child in d.iterdir():
                if child.is_dir():
                    _rmdir(child)
            _rmdir(d)


def _mkdir(path: Path) -> None:
    """A cgroup directory that the function inside may read (runtimes size their heaps from
    their cgroup's memory limit, as Node.js and the JVM do): 0755 whatever the server's
    umask (which is private, see `lamina.datadir`)."""
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o755)


def _sweep(base: Path) -> None:
    """Remove parents left by Lamina servers that are no longer running, with what still runs
    in them: a server killed with SIGKILL leaves its frozen environments behind (a frozen
    process does not act on its parent's death), which are thawed and killed here."""
    with contextlib.suppress(OSError):
        for d in base.iterdir():
            if not d.name.startswith("lamina-") or not d.is_dir():
                continue
            try:
                pid = int(d.name.removeprefix("lamina-"))
            except ValueError:
                continue
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                children = [c for c in d.iterdir() if c.is_dir()]
                for child in children:
                    _kill_all(child)
                for child in children:
                    _rmdir(child)
                _rmdir(d)


def _kill_all(cgroup: Path) -> None:
    """Thaw a cgroup (if it is a freezer's) and SIGKILL every process in it."""
    with contextlib.suppress(OSError):
        _write(cgroup / "freezer.state", "THAWED")
    with contextlib.suppress(OSError):
        _write(cgroup / "cgroup.freeze", "0")
    with contextlib.suppress(OSError):
        for line in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(line), signal.SIGKILL)


def _rmdir(path: Path) -> None:
    # A cgroup can be removed only once its last process is fully gone; the kernel may need
    # a moment after the kill.
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


def _freezer_place(
    v2_mount: str | None, v1_mounts: dict[str, str], own_v1: dict[str, str], name: str
) -> _Place | None:
    if FREEZER in v1_mounts:
        base = Path(v1_mounts[FREEZER] + own_v1.get(FREEZER, "/"))
        return _Place(FREEZER, 1, base / name)
    if v2_mount is not None:
        return _Place(FREEZER, 2, Path(v2_mount) / name)
    return None


class Cgroup:
    """One environment's cgroup (a directory per v1 controller, or one v2 directory)."""

    def __init__(self, paths: dict[str, tuple[int, Path]]) -> None:
        self._paths = paths
        version, mem = paths["memory"]
        self._v2 = version == 2
        self._mem = mem
        self._oom_file = mem / ("memory.events" if self._v2 else "memory.oom_control")
        self._usage_file = mem / ("memory.current" if self._v2 else "memory.usage_in_bytes")
        self._peak_file = mem / ("memory.peak" if self._v2 else "memory.max_usage_in_bytes")
        # What was last written, so that a claim matching what a pooled cgroup was set up
        # with writes nothing (each write is tens of microseconds on a cold start's path).
        self._memory: tuple[int, int] | None = None
        self._cpu: int | None = None
        self._hard_bytes = 1 << 62  # a new cgroup is unlimited
        self._peak_seen = -1
        self._function_peak = 0
        self._freezer_fd: int | None = None
        self._freeze_values = (b"1", b"0")
        #: the peak and usage files, kept open (see `_read_kept`)
        self._kept: list[int | None] = [None, None]
        self._files_closed = False

    def open_freezer(self) -> None:
        """Open the freezer's control file once (blocking), so that freezing and thawing are
        one write() each on the warm-invoke path."""
        place = self._paths.get(FREEZER)
        if place is None or self._freezer_fd is not None:
            return
        version, path = place
        name = "cgroup.freeze" if version == 2 else "freezer.state"
        if version == 1:
            self._freeze_values = (b"FROZEN", b"THAWED")
        try:
            self._freezer_fd = os.open(path / name, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self._freezer_fd = None  # e.g. a v2 kernel older than 5.2: no freezing

    @property
    def can_freeze(self) -> bool:
        return self._freezer_fd is not None

    def freeze(self) -> None:
        """Stop every process of the cgroup where it stands. The write returns at once (the
        kernel freezes the tasks asynchronously): cheap enough for the event loop."""
        if self._freezer_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._freezer_fd, self._freeze_values[0])

    def thaw(self) -> None:
        """Let the cgroup's processes run again (also before killing them: a v1-frozen task
        does not die of SIGKILL until it is thawed)."""
        if self._freezer_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._freezer_fd, self._freeze_values[1])

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(path / "cgroup.procs") for _, path in self._paths.values()})

    def set_pids(self, limit: int) -> None:
        _, path = self._paths["pids"]
        _write(path / "pids.max", str(limit))

    def limit_memory(self, memory_mb: int, hard_extra_mb: int = 0) -> None:
        """Memory for a function of `memory_mb`.

        The hard memory limit is `memory_mb + hard_extra_mb`: /tmp is a tmpfs, whose pages
        the kernel charges to the cgroup that writes them, while on Lambda /tmp is storage
        apart from memory. So the cgroup caps both together, and the backend holds the
        function's own (anonymous) memory to `memory_mb` by watching `anon_bytes()`.
        """
        if self._memory == (memory_mb, hard_extra_mb):
            return
        self._memory = (memory_mb, hard_extra_mb)
        hard = (memory_mb + hard_extra_mb) * MB
        if self._v2:
            _write(self._mem / "memory.max", str(hard))
            with contextlib.suppress(OSError):
                _write(self._mem / "memory.swap.max", "0")
        else:
            # v1 keeps memory <= memory+swap at every step: raise memsw first, lower it last.
            names = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            if hard > self._hard_bytes:
                names.reverse()
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # no swap accounting here
                    _write(self._mem / name, str(hard))
            with contextlib.suppress(OSError):
                _write(self._mem / "memory.swappiness", "0")
        self._hard_bytes = hard

    def limit_cpu(self, memory_mb: int) -> None:
        """CPU in proportion to memory, as Lambda gives it (1,769 MB = one vCPU)."""
        if self._cpu == memory_mb:
            return
        self._cpu = memory_mb
        quota = max(1000, memory_mb * CPU_PERIOD_US // MB_PER_VCPU)
        version, cpu = self._paths["cpu"]
        if version == 2:
            _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota))

    def oom_kills(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            for line in self._oom_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def usage_bytes(self) -> int:
        return self._read_kept(1, self._usage_file)

    def anon_bytes(self) -> int:
        """Memory the function's processes hold themselves (not /tmp, not file cache)."""
        key = b"anon " if self._v2 else b"rss "
        with contextlib.suppress(OSError, ValueError):
            for line in (self._mem / "memory.stat").read_bytes().splitlines():
                if line.startswith(key):
                    return int(line[len(key) :])
        return 0

    def _stat(self, *keys: bytes) -> dict[bytes, int]:
        found: dict[bytes, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (self._mem / "memory.stat").read_bytes().splitlines():
                name, _, value = line.partition(b" ")
                if name in keys:
                    found[name] = int(value)
        return found

    def function_peak_bytes(self) -> int:
        """The most memory the function has used as Lambda counts it: the cgroup's peak less
        what /tmp holds (tmpfs pages are charged to the cgroup as shmem, but on Lambda /tmp
        is storage apart from memory), and never less than what its processes hold now."""
        peak = self.peak_bytes()
        if peak == self._peak_seen:
            # Read after every invocation: while the peak stands still (a warm function's
            # usual case) the answer does too, and memory.stat is not read again.
            return self._function_peak
        stat = self._stat(b"shmem", b"anon" if self._v2 else b"rss")
        shmem = stat.get(b"shmem", 0)
        anon = stat.get(b"anon" if self._v2 else b"rss", 0)
        self._peak_seen = peak
        self._function_peak = max(peak - shmem, anon)
        return self._function_peak

    def peak_bytes(self) -> int:
        return self._read_kept(0, self._peak_file)

    def _read_kept(self, slot: int, path: Path) -> int:
        """A number read from a control file with one pread() on a descriptor kept open,
        rather than open, read and close (and pathlib's own work) each time: the peak is read
        after every invocation, the usage by the memory watch ten times a second. A control
        file is generated afresh by each read from offset 0."""
        fd = self._kept[slot]
        if fd is None:
            if self._files_closed:
                return 0
            try:
                fd = self._kept[slot] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return 0
        with contextlib.suppress(OSError, ValueError):
            return int(os.pread(fd, 64, 0))
        return 0

    def close_files(self) -> None:
        """Close the control files kept open (freezer, peak, usage); called on the event loop,
        which is what reads and writes them, once the cgroup's processes are gone."""
        self._files_closed = True
        for fd in (self._freezer_fd, *self._kept):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._freezer_fd = None
        self._kept = [None, None]

    def kill_all(self) -> None:
        self.thaw()
        _, path = self._paths["pids"]
        if self._v2:
            with contextlib.suppress(OSError):
                _write(path / "cgroup.kill", "1")
                return
        with contextlib.suppress(OSError, ValueError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), 9)

    def remove(self) -> None:
        """Blocking; retries while the kernel finishes with the last processes."""
        self.close_files()
        for _, path in self._paths.values():
            _rmdir(path)
