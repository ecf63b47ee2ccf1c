"""A container image's root filesystem in a namespace sandbox, the backend driven directly.

The image is a tiny root made here without any registry: the host's /bin/sh with the
libraries `ldd` names, a few files of the image's own, and the mount points the unpacker
(`lamina.images`) guarantees. Each test runs a shell script as the image's entry point and
reads what it printed: what the runtime sees at /, where it may write, its /tmp, its working
directory, how its entry point is found, and that a second environment of the image comes
from the pool made ahead. One test prints a cold start of an image sandbox beside a custom
runtime's (zip) one, without asserting on times.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lamina.sandbox import namespace
from lamina.sandbox.api import RuntimeSpec, SandboxError, SandboxSpec

# CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
# skipped: this skip can only hide these tests on an unprivileged developer machine.
if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

MARKER = "image-marker-5d1c"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}


def make_image(root: Path, missing: Sequence[str] = ()) -> Path:
    """A root filesystem with /bin/sh (the host's, with its libraries), a marker file, an
    entry point in /usr/local/bin, one in /opt/custom/bin, a working directory /srv/app,
    and the unpacker's mount points except `missing`."""
    shell = Path(os.path.realpath("/bin/sh"))
    (root / "bin").mkdir(parents=True)
    shutil.copy2(shell, root / "bin" / "sh")
    found = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=True)
    for lib in re.findall(r"(/\S+)", found.stdout):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
    (root / "marker").write_text(MARKER + "\n")
    for path, text in (
        ("usr/local/bin/entry", 'echo "entry $0 $*"; echo "cwd $(pwd)"'),
        ("opt/custom/bin/entry", 'echo "custom $0 $*"'),
        ("opt/custom/bin/plain", "echo never"),
    ):
        script = root / path
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f"#!/bin/sh\n{text}\n")
        script.chmod(0o755)
    (root / "opt/custom/bin/plain").chmod(0o644)
    (root / "srv" / "app").mkdir(parents=True)
    for name in ("dev", "proc", "sys", "tmp", "opt", "var/task", "var/runtime", "etc"):
        if name not in missing:
            (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for name in ("etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf"):
        if name not in missing:
            (root / name).write_text("image-own\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime (nothing may change them)."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            seen[os.path.relpath(os.path.join(directory, name), root)] = (
                st.st_size,
                st.st_mtime_ns,
            )
    return seen


@dataclass
class Host:
    loop: asyncio.AbstractEventLoop
    backend: namespace.NamespaceBackend
    base: Path
    data_dir: Path
    image: Path

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def expect(self, specs: list[RuntimeSpec]) -> None:
        async def expect() -> None:  # (on the loop: the pools start tasks)
            self.backend.expect(specs)

        self.run(expect())


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    why_not = namespace.available()
    assert why_not is None, why_not
    # Under /var/tmp, world-readable: a host /tmp would be out of sight whatever Lamina did.
    base = Path(tempfile.mkdtemp(prefix="lamina-image-", dir="/var/tmp"))
    base.chmod(0o755)
    data_dir = base / "data"
    (data_dir / "secret").mkdir(parents=True)
    (data_dir / "secret" / "key").write_text("do not show\n")
    image = make_image(data_dir / "images" / "unpacked" / "rootfs")
    loop = asyncio.new_event_loop()

    async def make() -> namespace.NamespaceBackend:
        return namespace.NamespaceBackend(
            data_dir / "sandboxes", data_dir, api_address=("127.0.0.1", 9), warm_pool=2
        )

    backend = loop.run_until_complete(make())
    try:
        yield Host(loop, backend, base, data_dir, image)
    finally:
        loop.run_until_complete(backend.close())
        loop.close()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Ran:
    status: int
    output: str
    pid: int | None
    #: milliseconds from create() until start() returned (the runtime exists)
    start_ms: float


_seq = 0


def spec_for(host: Host, output_fd: int, argv: Sequence[str], **kw: Any) -> SandboxSpec:
    global _seq
    _seq += 1
    fields: dict[str, Any] = {
        "sandbox_id": f"img-test-{_seq}",
        "argv": list(argv),
        "task_root": host.base,  # (ignored for an image)
        "runtime_dir": host.base,
        "memory_mb": 256,
        "ephemeral_storage_mb": 512,
        "output_fd": output_fd,
        "image_root": host.image,
        **kw,
    }
    return SandboxSpec(**fields)


async def run(
    host: Host,
    argv: Sequence[str],
    env: Mapping[str, str] = ENV,
    before_exit: Any = None,
    **kw: Any,
) -> Ran:
    """Run `argv` in a sandbox to its end; its output and exit status."""
    read, write = os.pipe()
    try:
        t0 = time.perf_counter()
        sandbox = host.backend.create(spec_for(host, write, argv, **kw))
        try:
            endpoint = await sandbox.prepare()
            endpoint.sock.close()
            exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            sandbox.on_exit(lambda status: exited.done() or exited.set_result(status))
            await sandbox.start(env)
            start_ms = (time.perf_counter() - t0) * 1000
            pid = sandbox.pid
            if before_exit is not None:
                await before_exit(sandbox)
            status = await asyncio.wait_for(exited, 30)
        finally:
            await sandbox.destroy()
        os.close(write)
        write = -1
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        return Ran(status, b"".join(chunks).decode(), pid, start_ms)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def lines(output: str) -> dict[str, str]:
    """`key value` lines as a dict."""
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr")


def test_the_runtime_sees_the_image_at_root(host: Host) -> None:
    data = str(host.data_dir)
    script = f"""
read marker < /marker; echo "marker $marker"
echo "cwd $(pwd)"
while read key value rest; do
    case "$key" in Uid:) echo "uid $value";; esac
done < /proc/self/status
while read line; do case "$line" in sbx_user1051:*) echo "passwd $line";; esac; done < /etc/passwd
while read line; do case "$line" in image-own) echo "image-own $line";; esac; done < /etc/group
while read ip names; do
    case "$names" in *sandbox.localdomain*) echo "hosts $ip";; esac
done < /etc/hosts
for path in /usr/bin/python3 /usr/share /root /run /home /var/lib /etc/shadow \
        {data} {data}/secret; do
    if [ -e "$path" ]; then echo "visible $path"; fi
done
for path in /dev/null /dev/urandom /dev/fd /proc/self /sys/kernel /var/task /opt/custom; do
    if [ -e "$path" ]; then echo "has $path"; fi
done
for device in /dev/*; do echo "dev $device"; done
while read line; do echo "resolv $line"; done < /etc/resolv.conf
echo "done yes"
"""
    ran = host.run(run(host, sh(script)))
    assert ran.status == 0, ran.output
    seen = lines(ran.output)
    assert seen["marker"] == MARKER
    assert seen["cwd"] == "/var/task"  # no working_dir: a zip function's
    assert seen["uid"] == str(namespace._sandbox_ids()[0])  # not root, not the image's USER
    assert seen["passwd"].startswith("sbx_user1051:x:")
    assert "image-own" not in seen  # Lambda's user database over the image's
    assert seen["hosts"] == "127.0.0.1"
    assert seen["done"] == "yes"
    assert "visible" not in ran.output, ran.output
    found = [line.split(" ", 1) for line in ran.output.splitlines()]
    assert {v for k, v in found if k == "has"} == {
        "/dev/null",
        "/dev/urandom",
        "/dev/fd",
        "/proc/self",
        "/sys/kernel",
        "/var/task",
        "/opt/custom",
    }
    assert {v for k, v in found if k == "dev"} == {f"/dev/{n}" for n in DEVICES}
    # Names resolve as the host's do (its resolv.conf, not the image's placeholder).
    resolv = [v for k, v in found if k == "resolv" and v]
    if os.path.isfile("/etc/resolv.conf"):
        host_lines = Path("/etc/resolv.conf").read_text().splitlines()
        assert resolv == [line.strip() for line in host_lines if line.strip()], resolv
    else:
        assert resolv == ["image-own"]


def test_its_init_is_the_native_one_exec_d_after_pivot(host: Host) -> None:
    seen: dict[str, str] = {}

    async def look(sandbox: Any) -> None:
        seen["init"] = os.readlink(f"/proc/{sandbox.pid}/exe")
        sandbox.terminate()

    # A runtime that spins until the look is taken (the image has no `sleep`).
    ran = host.run(run(host, sh("while :; do :; done"), before_exit=look))
    assert ran.status == -15  # SIGTERM, through the init's 128 + N
    built = host.backend._init
    if built is not None and built.static:
        # Opened by the zygote on the host, exec'd by descriptor inside the image's root.
        assert Path(seen["init"]).name.startswith("init-") and seen["init"].endswith("-static")
    else:
        assert "python" in Path(seen["init"]).name, seen  # the Python init, no C library needed


def test_nothing_but_tmp_is_writable_and_the_image_is_untouched(host: Host) -> None:
    before = snapshot(host.image)
    script = """
for path in /new /etc/new /var/task/new /opt/new /dev/new /proc/new /sys/new /srv/app/new \
        /tmp/new; do
    if (echo x > "$path") 2>/dev/null; then echo "wrote $path"; else echo "refused $path"; fi
done
if (echo x >> /etc/passwd) 2>/dev/null; then echo "wrote /etc/passwd"; fi
if (echo x >> /marker) 2>/dev/null; then echo "wrote /marker"; fi
"""
    ran = host.run(run(host, sh(script)))
    assert ran.status == 0, ran.output
    wrote = [line for line in ran.output.splitlines() if line.startswith("wrote")]
    assert wrote == ["wrote /tmp/new"], ran.output
    assert snapshot(host.image) == before


def test_tmp_is_private_and_sized(host: Host) -> None:
    script = """
while read id parent dev root point rest; do
    case "$point" in /tmp) echo "mount $rest";; esac
done < /proc/self/mountinfo
echo secret > /tmp/left-behind
for f in /tmp/*; do echo "tmp $f"; done
"""
    first = host.run(run(host, sh(script), ephemeral_storage_mb=600))
    assert first.status == 0, first.output
    mount = lines(first.output)["mount"]
    assert " tmpfs " in f" {mount} " and "size=614400k" in mount, mount
    assert "rw," in mount or mount.startswith("rw"), mount
    assert lines(first.output)["tmp"] == "/tmp/left-behind"
    # Neither the image's /tmp on the host nor the next sandbox sees what it wrote there.
    assert list((host.image / "tmp").iterdir()) == []
    second = host.run(run(host, sh('for f in /tmp/*; do echo "tmp $f"; done')))
    assert lines(second.output)["tmp"] == "/tmp/*", second.output  # (an empty glob)


def test_the_working_dir_and_an_entry_point_found_in_path(host: Host) -> None:
    ran = host.run(run(host, ["entry", "one", "two"], working_dir="/srv/app"))
    assert ran.status == 0, ran.output
    seen = lines(ran.output)
    assert seen["entry"] == "/usr/local/bin/entry one two"
    assert seen["cwd"] == "/srv/app"
    # The PATH of the environment given to start(): the first directory that has it (and
    # may execute it) wins.
    env = {**ENV, "PATH": "/opt/custom/bin:/usr/local/bin"}
    ran = host.run(run(host, ["entry", "x"], env=env))
    assert lines(ran.output)["custom"] == "/opt/custom/bin/entry x", ran.output
    env = {"PATH": "/usr/local/bin"}
    assert host.run(run(host, ["/bin/sh", "-c", "echo ok $PATH"], env=env)).output == (
        "ok /usr/local/bin\n"
    )


def _start_error(host: Host, argv: list[str], **kw: Any) -> OSError:
    with pytest.raises(SandboxError) as raised:
        host.run(run(host, argv, **kw))
    cause = raised.value.__cause__
    assert isinstance(cause, OSError), raised.value
    return cause


def test_an_entry_point_that_cannot_be_executed(host: Host) -> None:
    # What the scheduler turns into Runtime.InvalidEntrypoint: filename is argv[0].
    missing = _start_error(host, ["no-such-entry", "arg"])
    assert (missing.errno, missing.filename) == (errno.ENOENT, "no-such-entry")
    absolute = _start_error(host, ["/var/task/bootstrap"])
    assert (absolute.errno, absolute.filename) == (errno.ENOENT, "/var/task/bootstrap")
    # Found only where it is not executable: EACCES, as execvp says.
    denied = _start_error(host, ["plain"], env={"PATH": "/opt/custom/bin"})
    assert (denied.errno, denied.filename) == (errno.EACCES, "plain")
    # A working directory the image lacks is named as such.
    nowhere = _start_error(host, ["entry"], working_dir="/no/such/dir")
    assert (nowhere.errno, nowhere.filename) == (errno.ENOENT, "/no/such/dir")


def test_an_image_without_a_mount_point_fails_clearly(host: Host) -> None:
    broken = make_image(host.base / "broken" / "rootfs", missing=("etc/hosts",))
    before = snapshot(broken)
    with pytest.raises(SandboxError) as raised:
        host.run(run(host, sh("echo never"), image_root=broken))
    assert "/etc/hosts must be a regular file" in str(raised.value), raised.value
    assert f"{broken}/etc/hosts is missing" in str(raised.value), raised.value
    assert snapshot(broken) == before  # nothing written into the image
    host.expect([])  # (its pool keeps nothing ready: no more retries)


def test_mount_points_behind_links_in_the_image(host: Host) -> None:
    # A symlinked /etc/resolv.conf (common in images made from a distribution's root) gets
    # the host's resolvers at the link's target inside the image; the image is untouched.
    linked = make_image(host.base / "linked" / "rootfs", missing=("etc/resolv.conf",))
    (linked / "run" / "resolve").mkdir(parents=True)
    (linked / "run" / "resolve" / "stub.conf").write_text("image-own\n")
    (linked / "etc" / "resolv.conf").symlink_to("../run/resolve/stub.conf")
    before = snapshot(linked)
    script = 'while read line; do echo "resolv $line"; done < /etc/resolv.conf'
    ran = host.run(run(host, sh(script), image_root=linked))
    host.expect([])  # (its pool keeps nothing ready)
    assert ran.status == 0, ran.output
    if os.path.isfile("/etc/resolv.conf"):
        assert "resolv image-own" not in ran.output, ran.output
        first = Path("/etc/resolv.conf").read_text().split("\n", 1)[0].strip()
        assert f"resolv {first}" in ran.output, ran.output
    assert snapshot(linked) == before


def _pool(host: Host, image: Path) -> Any:
    keys = [key for key in host.backend._pools if key[3] == str(image)]
    assert len(keys) == 1, host.backend._pools.keys()
    return host.backend._pools[keys[0]]


async def _ready(pool: Any, count: int) -> None:
    for _ in range(300):
        if pool.ready >= count and not pool.making:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"pool {pool.name}: {pool.ready} ready")


def test_environments_come_from_the_pool_and_start_as_fast_as_a_custom_runtime(
    host: Host,
) -> None:
    task = host.base / "zip-task"
    task.mkdir(exist_ok=True)
    (task / "bootstrap").write_text("#!/bin/sh\nexit 0\n")
    (task / "bootstrap").chmod(0o755)
    runtime = host.base / "zip-runtime"
    runtime.mkdir(exist_ok=True)
    zip_spec = RuntimeSpec("", False, runtime)
    image_spec = RuntimeSpec("", False, runtime, image_root=host.image)
    host.expect([zip_spec, image_spec])
    pool = _pool(host, host.image)
    host.run(_ready(pool, 2))
    zip_key = host.backend._zygote("", False, runtime)
    host.run(_ready(host.backend._pools[zip_key], 2))

    times: dict[str, list[float]] = {"image": [], "zip": []}
    for _ in range(2):
        # Each one claims a child the pool made ahead (the pool holds two).
        waiting = [child.pid for child in pool._ready]
        ran = host.run(run(host, sh("exit 0")))
        assert ran.status == 0 and ran.pid in waiting, (ran.pid, waiting)
        times["image"].append(ran.start_ms)
        zipped = host.run(
            run(host, ["/var/task/bootstrap"], image_root=None, task_root=task, runtime_dir=runtime)
        )
        assert zipped.status == 0, zipped.output
        times["zip"].append(zipped.start_ms)
        host.run(_ready(pool, 2))
        host.run(_ready(host.backend._pools[zip_key], 2))
    print(
        "\ncold start (create -> runtime started, from the pool), ms: "
        f"image {', '.join(f'{t:.1f}' for t in times['image'])}; "
        f"custom runtime (zip) {', '.join(f'{t:.1f}' for t in times['zip'])}"
    )
    # An image no longer expected keeps nothing ready; one of its functions still starts.
    host.expect([zip_spec])
    assert pool.ready == 0 and pool.base == 0
    assert host.run(run(host, sh("echo late"))).output == "late\n"
