"""The data directory is private to the server's user (`lamina.datadir`): 0700, its files
0600 (databases with their -wal/-shm files, code zips, the secret key), fixed at start for a
directory an older Lamina left 0755/0644; and functions still run on both backends, whose
runtimes read their code through their own mounts (namespace) or as the server's user
(process). Another local user (`nobody`) is checked to read nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import Functions, Server

NOBODY = 65534
CODE = (
    "import os\n"
    "def handler(event, context):\n"
    "    print('a log line with a payload', event)\n"
    "    path = '/tmp/made-by-function'\n"
    "    with open(path, 'w') as f:\n"
    "        f.write('x')\n"
    "    return {'ok': event['n'], 'tmp_mode': oct(os.stat(path).st_mode & 0o777)}\n"
)

pytestmark = [
    pytest.mark.control_plane,
    pytest.mark.skipif(os.geteuid() != 0, reason="checks another user's access"),
]


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory every local user may enter (pytest's own are 0700, which would hide the
    data directory whatever its modes)."""
    parent = Path(tempfile.mkdtemp(prefix="lamina-perm-"))
    parent.chmod(0o755)
    yield parent
    subprocess.run(["rm", "-rf", str(parent)], check=False)


def shared(rel: Path) -> bool:
    """Whether `rel` is (in) a tree a sandbox mounts and reads, or a sandbox's own."""
    parts = rel.parts
    if len(parts) < 2:
        return False
    if parts[0] == "code":
        return parts[1] == "tasks" and len(parts) > 2
    if parts[0] == "images":  # an image's root keeps the image's modes
        return len(parts) > 3 and parts[1] == "roots" and parts[3] == "rootfs"
    return parts[0] == "sandboxes" or (parts[0] == "opt" and parts[1] != "tmp")


def modes(data_dir: Path) -> dict[str, int]:
    """Every path under the data directory but those `shared` -> its mode."""
    found = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for here, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = Path(here, name)
            rel = path.relative_to(data_dir)
            if not shared(rel) and not path.is_symlink():
                found[str(rel)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def readable_by_nobody(paths: list[Path]) -> list[str]:
    """Which of `paths` a process running as `nobody` can open."""
    # A shell, not this interpreter: the test's venv may be where `nobody` cannot go.
    probe = 'for p in "$@"; do cat "$p" >/dev/null 2>&1 && echo "$p"; done; true'
    done = subprocess.run(
        ["/bin/sh", "-c", probe, "probe", *map(str, paths)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return done.stdout.split()


def private_files(data_dir: Path) -> list[Path]:
    wanted = [
        "lamina.db",
        "events.db",
        "logs.db",
        "usage.db",
        "secret.key",
        "lamina.db-wal",
        "logs.db-wal",
    ]
    files = [data_dir / name for name in wanted]
    files += list((data_dir / "code" / "zips").glob("*.zip"))
    for path in files:
        assert path.exists(), path
    return files


def run_function(server: Server, name: str | None = None) -> tuple[str, dict[str, str]]:
    lam = server.client()
    functions = Functions(lam)
    if name is None:
        name = functions.create(CODE)["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1}))
    out = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, out
    assert out["ok"] == 1
    return name, out


@pytest.mark.parametrize("backend", ["namespace", "process"])
def test_a_new_data_dir_is_private_and_functions_run(
    backend: str, own_server: Callable[..., Server], open_parent: Path
) -> None:
    data_dir = open_parent / "data"
    server = own_server(data_dir, "--sandbox", backend)
    _, out = run_function(server)
    # The function's own files keep the usual modes: the server's umask is not theirs.
    assert out["tmp_mode"] == "0o644"

    found = modes(data_dir)
    assert found["."] == 0o700
    loose = {p: oct(m) for p, m in found.items() if m & 0o077}
    assert not loose, loose
    files = private_files(data_dir)
    assert readable_by_nobody(files) == []
    # The code sandboxes read stays readable by their unprivileged user (below 0700 parents).
    tasks = list((data_dir / "code" / "tasks").iterdir())
    assert tasks and all(stat.S_IMODE(t.stat().st_mode) == 0o755 for t in tasks)
    assert all(stat.S_IMODE((t / "app.py").stat().st_mode) == 0o644 for t in tasks)
    assert readable_by_nobody([tasks[0] / "app.py"]) == []


@pytest.mark.parametrize("backend", ["namespace", "process"])
def test_an_old_world_readable_data_dir_is_fixed_at_start(
    backend: str, own_server: Callable[..., Server], open_parent: Path
) -> None:
    data_dir = open_parent / "data"
    server = own_server(data_dir, "--sandbox", backend)
    name, _ = run_function(server)
    assert server.stop() == 0
    # As an older Lamina left it: directories 0755, files 0644.
    for here, dirs, files in os.walk(data_dir):
        for d in dirs:
            Path(here, d).chmod(0o755)
        for f in files:
            if not Path(here, f).is_symlink():
                Path(here, f).chmod(0o644)
    data_dir.chmod(0o755)
    assert readable_by_nobody([data_dir / "lamina.db"]) == [str(data_dir / "lamina.db")]

    server = own_server(data_dir, "--sandbox", backend)
    found = modes(data_dir)
    assert found["."] == 0o700
    loose = {p: oct(m) for p, m in found.items() if m & 0o077}
    assert not loose, loose
    assert readable_by_nobody(private_files(data_dir)) == []
    # The function made before still runs, from the same code.
    run_function(server, name)
