"""The data directory's modes (`lamina.datadir`) and the code trees sandboxes read, made
under the server's private umask (`lamina.store.blobs`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import make_zip

from lamina.control.layers import LayerMerges
from lamina.datadir import PRIVATE_UMASK, make_private
from lamina.models import FunctionLayer
from lamina.store import CodeStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def private_umask() -> Iterator[None]:
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def test_make_private_creates_and_fixes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    make_private(fresh)
    assert mode(fresh) == 0o700

    old = tmp_path / "old"
    for d in (
        "code/tasks/abc/lib",
        "code/zips",
        "code/tmp",
        "opt/tmp",
        "opt/k1",
        "sandboxes/x",
        "replay",
    ):
        (old / d).mkdir(parents=True)
    for f in ("lamina.db", "lamina.db-wal", "secret.key", "code/zips/abc.zip", "replay/1.jsonl"):
        (old / f).write_text("x")
    (old / "code/tasks/abc/app.py").write_text("x")
    (old / "opt/k1/lib.py").write_text("x")
    (old / "link").symlink_to("/etc/hostname")
    for here, dirs, files in os.walk(old):
        for name in dirs:
            Path(here, name).chmod(0o755)
        for name in files:
            if not Path(here, name).is_symlink():
                Path(here, name).chmod(0o644)
    old.chmod(0o755)
    make_private(old)
    for private in ("", "code", "code/tasks", "code/zips", "code/tmp", "opt", "opt/tmp", "replay"):
        assert mode(old / private) == 0o700, private
    for private in (
        "lamina.db",
        "lamina.db-wal",
        "secret.key",
        "code/zips/abc.zip",
        "replay/1.jsonl",
    ):
        assert mode(old / private) == 0o600, private
    # What sandboxes mount keeps its modes; a symlink's target is left alone.
    assert mode(old / "code/tasks/abc") == 0o755
    assert mode(old / "code/tasks/abc/app.py") == 0o644
    assert mode(old / "opt/k1") == 0o755
    assert mode(Path("/etc/hostname")) & 0o004


def test_unpacked_code_is_readable_under_the_private_umask(
    tmp_path: Path, private_umask: None
) -> None:
    store = CodeStore(tmp_path / "code")
    stored = store.put(make_zip({"app.py": "x", "pkg/sub/mod.py": "y", "bootstrap": "z"}))
    task = stored.task_dir
    assert mode(task) == 0o755
    assert mode(task / "pkg") == 0o755
    assert mode(task / "pkg/sub") == 0o755
    assert mode(task / "pkg/sub/mod.py") == 0o644
    assert mode(task / "bootstrap") == 0o755
    assert mode(store.zip_path(stored.sha256)) == 0o600
    assert mode(tmp_path / "code" / "tasks") == 0o700


def test_merged_layers_are_readable_under_the_private_umask(
    tmp_path: Path, private_umask: None
) -> None:
    store = CodeStore(tmp_path / "code")
    merges = LayerMerges(tmp_path / "opt", store)
    assert mode(tmp_path / "opt" / "empty") == 0o755
    one = store.put(make_zip({"python/a/one.py": "1"}))
    two = store.put(make_zip({"python/b/two.py": "2"}))
    opt = merges.build([FunctionLayer(f"arn:{s.sha256}", s.sha256, s.size) for s in (one, two)])
    for d in ("", "python", "python/a", "python/b"):
        assert mode(opt / d) == 0o755, d
    assert mode(opt / "python/b/two.py") == 0o644
