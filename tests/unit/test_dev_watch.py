"""`lamina.stacks.watch` on real directories: what is ignored, reproducible zips, and the
watcher grouping a burst of saves into one reload per directory touched."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile
from pathlib import Path

from lamina.cli.dev import function_name
from lamina.stacks.watch import ignored, package, watch


def test_ignored_files_and_directories(tmp_path: Path) -> None:
    root = tmp_path
    for rel in ["app.py", "node_modules/x/index.js", "lib/util.py", "bootstrap", "a.swp.py"]:
        assert not ignored(root / rel, root), rel
    for rel in [
        "__pycache__/app.cpython-311.pyc",
        ".git/HEAD",
        "lib/__pycache__",
        ".app.py.swp",
        "app.py~",
        ".#app.py",
        "#app.py#",
        "4913",
        "lib/mod.pyc",
    ]:
        assert ignored(root / rel, root), rel
    assert ignored(tmp_path.parent / "elsewhere.py", root)  # not under the root at all


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_package_is_reproducible_and_leaves_out_ignored_files(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app.py": "def handler(e, c): return 1\n",
            "node_modules/dep/index.js": "module.exports = 1;\n",
            "__pycache__/app.cpython-311.pyc": "junk",
            ".app.py.swp": "swap",
        },
    )
    (tmp_path / "bootstrap").write_text("#!/bin/sh\n")
    (tmp_path / "bootstrap").chmod(0o755)
    first = package(tmp_path)
    names = zipfile.ZipFile(io.BytesIO(first.data)).namelist()
    assert names == ["app.py", "bootstrap", "node_modules/dep/index.js"]
    assert first.files == 3
    modes = {
        i.filename: i.external_attr >> 16 & 0o777
        for i in zipfile.ZipFile(io.BytesIO(first.data)).infolist()
    }
    assert modes == {"app.py": 0o644, "bootstrap": 0o755, "node_modules/dep/index.js": 0o644}

    # touching files (new mtimes) and adding ignored ones changes nothing
    later = time.time() + 100
    os.utime(tmp_path / "app.py", (later, later))
    (tmp_path / "app.py~").write_text("backup")
    again = package(tmp_path)
    assert again.data == first.data and again.sha256 == first.sha256

    (tmp_path / "app.py").write_text("def handler(e, c): return 2\n")
    assert package(tmp_path).sha256 != first.sha256


def test_watch_groups_a_burst_per_directory(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "inner"
    other = tmp_path / "other"
    for d in (inner, other):
        d.mkdir(parents=True)
    stop = threading.Event()
    ready = threading.Event()
    batches: list[set[Path]] = []

    def run() -> None:
        for touched in watch([outer, inner, other], stop=stop, ready=ready.set):
            batches.append(touched)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        # ignored files alone: nothing
        (other / ".x.swp").write_text("swap")
        (other / "__pycache__").mkdir()
        (other / "__pycache__" / "m.pyc").write_text("pyc")
        time.sleep(0.5)
        assert batches == []
        # an editor's burst (write, backup, rename) in the nested dir: one batch, both dirs
        (inner / "app.py.tmp").write_text("x = 1\n")
        (inner / "app.py~").write_text("old")
        (inner / "app.py.tmp").rename(inner / "app.py")
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert batches == [{outer.resolve(), inner.resolve()}]
        (outer / "top.py").write_text("y = 2\n")
        deadline = time.monotonic() + 5
        while len(batches) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batches[1:] == [{outer.resolve()}]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_watch_a_file_through_its_directory(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    template = tmp_path / "template.yaml"
    template.write_text("a: 1\n")
    stop = threading.Event()
    ready = threading.Event()
    batches: list[set[Path]] = []

    def run() -> None:
        for touched in watch([code], stop=stop, ready=ready.set, files=[template]):
            batches.append(touched)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        (tmp_path / "README.md").write_text("not watched")  # a sibling of the file
        time.sleep(0.4)
        assert batches == []
        for round_ in (1, 2):  # saved by renaming a new file over it, twice
            (tmp_path / "template.yaml.new").write_text(f"a: {round_ + 1}\n")
            (tmp_path / "template.yaml.new").rename(template)
            deadline = time.monotonic() + 5
            while len(batches) < round_ and time.monotonic() < deadline:
                time.sleep(0.02)
            assert batches[round_ - 1] == {template.resolve()}
    finally:
        stop.set()
        thread.join(5)


def test_function_names_from_directories(tmp_path: Path) -> None:
    assert function_name(tmp_path / "hello world.v2") == "hello-world-v2"
    assert function_name(tmp_path / ("x" * 80)) == "x" * 64
    assert function_name(Path("/")) == "function"
