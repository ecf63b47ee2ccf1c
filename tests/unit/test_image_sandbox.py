"""Container-image functions at the sandbox's edge, without root: the process backend refuses
them with the message the contract names, and the zygote's two helpers an image sandbox
relies on behave as documented: `execute` finds an entry point as execvp(3) does, and
`image_path` accepts only an image's own directories and files as mount points.

The namespace backend running an image root is tested for real in
tests/system/test_image_sandbox.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.sandbox._zygotes import ZYGOTE
from lamina.sandbox.api import IMAGE_NEEDS_NAMESPACE, SandboxError, SandboxSpec
from lamina.sandbox.process import ProcessBackend


def test_the_process_backend_refuses_an_image_root(tmp_path: Path) -> None:
    assert IMAGE_NEEDS_NAMESPACE == (
        "container-image functions need the namespace sandbox (lamina serve --sandbox namespace)"
    )

    async def create() -> None:
        backend = ProcessBackend(tmp_path / "sandboxes")
        spec = SandboxSpec(
            sandbox_id="img-1",
            argv=["/lambda-entrypoint.sh", "app.handler"],
            task_root=tmp_path,
            runtime_dir=tmp_path,
            memory_mb=128,
            ephemeral_storage_mb=512,
            output_fd=1,
            image_root=tmp_path / "rootfs",
        )
        try:
            with pytest.raises(SandboxError) as raised:
                backend.create(spec)
            assert str(raised.value) == IMAGE_NEEDS_NAMESPACE
            assert list((tmp_path / "sandboxes").iterdir()) == []  # nothing made for it
            # A zip function's spec is still taken.
            assert backend.create(dataclasses.replace(spec, image_root=None))
        finally:
            await backend.close()

    asyncio.run(create())


def _execute(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run the zygote's `execute(argv, env)` in a fresh interpreter (it execs or raises): its
    output if it exec'd, else the OSError it raised."""
    program = f"""
import json, sys
sys.path.insert(0, {str(ZYGOTE.parent)!r})
import zygote
try:
    zygote.execute({argv!r}, {env!r})
except OSError as e:
    print(json.dumps({{"errno": e.errno, "filename": e.filename}}))
"""
    done = subprocess.run(
        [sys.executable, "-S", "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = done.stdout.strip()
    return json.loads(out) if out.startswith("{") else {"output": out}


def _script(path: Path, text: str, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(mode)


def test_execute_looks_a_bare_name_up_in_the_environments_path(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _script(second / "entry", 'echo "second $0 $1"')
    env = {"PATH": f"{first}:{second}"}
    assert _execute(["entry", "arg"], env, tmp_path) == {"output": f"second {second}/entry arg"}
    # The first directory that has it wins; one where it is not executable (no x bit: even
    # for root) is passed over.
    _script(first / "entry", 'echo "first"', mode=0o644)
    assert _execute(["entry"], env, tmp_path) == {"output": f"second {second}/entry"}
    (first / "entry").chmod(0o755)
    assert _execute(["entry"], env, tmp_path) == {"output": "first"}
    # An empty entry is the working directory.
    _script(tmp_path / "here", "echo here")
    assert _execute(["here"], {"PATH": f"{first}:"}, tmp_path) == {"output": "here"}


def test_execute_reports_what_it_could_not_execute(tmp_path: Path) -> None:
    denied = tmp_path / "denied"
    _script(denied / "entry", "echo no", mode=0o644)
    # Nowhere: ENOENT, naming the entry point as given.
    missing = _execute(["no-such-entry"], {"PATH": str(tmp_path)}, tmp_path)
    assert missing == {"errno": 2, "filename": "no-such-entry"}
    # Found only where it may not be executed: EACCES.
    found = _execute(["entry"], {"PATH": f"{tmp_path}/none:{denied}"}, tmp_path)
    assert found["errno"] == 13
    # A path is executed as it is, never looked up.
    assert _execute(["./entry"], {"PATH": str(denied)}, tmp_path)["errno"] == 2


def test_execute_without_path_uses_the_default(tmp_path: Path) -> None:
    # `sh` is in /usr/bin or /bin on any host this runs on (DEFAULT_PATH).
    assert _execute(["sh", "-c", "echo $0"], {}, tmp_path) == {"output": "sh"}


def _image_path(image: Path, name: str, directory: bool) -> dict[str, object]:
    program = f"""
import json, sys
sys.path.insert(0, {str(ZYGOTE.parent)!r})
import zygote
try:
    print(json.dumps({{"path": zygote.image_path({str(image)!r}, {name!r}, {directory!r})}}))
except OSError as e:
    print(json.dumps({{"errno": e.errno, "error": e.strerror}}))
"""
    done = subprocess.run(
        [sys.executable, "-S", "-c", program], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def test_image_mount_points_are_found_in_the_image(tmp_path: Path) -> None:
    image = tmp_path / "rootfs"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "passwd").write_text("")
    (image / "proc").write_text("")
    assert _image_path(image, "etc", True) == {"path": "etc"}
    assert _image_path(image, "etc/passwd", False) == {"path": "etc/passwd"}
    for name, directory, why in (
        ("dev", True, f"{image}/dev is missing"),
        ("proc", True, f"{image}/proc is not a directory"),
        ("etc/group", False, f"{image}/etc/group is missing"),
        ("etc/passwd", True, f"{image}/etc/passwd is not a directory"),
        ("etc/passwd/x", False, f"{image}/etc/passwd is not a directory"),
    ):
        problem = _image_path(image, name, directory)
        assert f"the image's /{name} must be" in str(problem["error"]), problem
        assert f"({why})" in str(problem["error"]), problem


def test_links_in_an_image_are_followed_inside_it(tmp_path: Path) -> None:
    # As they would be with the image as `/`: a mount made before pivot_root must land on
    # the image's own file, never on the host's.
    image = tmp_path / "rootfs"
    (image / "run" / "resolve").mkdir(parents=True)
    (image / "run" / "resolve" / "stub.conf").write_text("")
    (image / "etc").mkdir()
    (image / "etc" / "resolv.conf").symlink_to("../run/resolve/stub.conf")
    (image / "etc" / "hosts").symlink_to("/run/resolve/../../../../stub-hosts")
    (image / "stub-hosts").write_text("")
    (image / "proc").symlink_to("/")
    (image / "var").symlink_to(str(tmp_path))  # the host's tmp_path: not followed there
    (tmp_path / "task").mkdir()
    (image / "loop").symlink_to("loop")
    assert _image_path(image, "etc/resolv.conf", False) == {"path": "run/resolve/stub.conf"}
    assert _image_path(image, "etc/hosts", False) == {"path": "stub-hosts"}
    assert "is its root" in str(_image_path(image, "proc", True)["error"])
    # /var/task: the link's target taken inside the image, where its first part is missing.
    missing = _image_path(image, "var/task", True)
    assert f"({image}/{tmp_path.parts[1]} is missing)" in str(missing["error"]), missing
    assert "too many symbolic links" in str(_image_path(image, "loop", True)["error"])
    assert os.path.islink(image / "var")
