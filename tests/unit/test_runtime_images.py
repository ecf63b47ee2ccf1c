"""Runtime images and their bundled SDKs (`runtimes.images`), with stand-in installers: the
real downloads run in the integration tests."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from lamina.runtimes import images as images_mod
from lamina.runtimes.catalog import Family, RuntimeInfo, host_architectures, implemented_family
from lamina.runtimes.images import RuntimeImages

PY = RuntimeInfo(
    name="python3.11",
    executable=sys.executable,
    runtime_dir=Path("/nowhere"),
    family=Family.PYTHON,
    version="3.11",
)
CUSTOM = RuntimeInfo(
    name="provided.al2023", executable="", runtime_dir=Path("/nowhere"), family=Family.PROVIDED
)


def fake_pip(monkeypatch: pytest.MonkeyPatch, script: str, calls: list[int]) -> None:
    """Replace pip with a Python one-liner run with the target directory as argv[1]."""

    def command(runtime: RuntimeInfo, target: Path) -> list[str]:
        calls.append(1)
        return [sys.executable, "-c", script, str(target)]

    monkeypatch.setattr(images_mod, "_pip_command", command)


INSTALLS = (
    "import os, sys; d = sys.argv[1]; print('Collecting boto3'); "
    "os.makedirs(os.path.join(d, 'boto3-1.43.11.dist-info'))"
)


def test_images_link_the_interpreter_and_install_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    fake_pip(monkeypatch, INSTALLS, calls)
    images = RuntimeImages(tmp_path)
    caplog.set_level(logging.INFO)
    states = asyncio.run(images.install([PY, CUSTOM]))
    assert states["python3.11"].state == "ready"
    assert states["python3.11"].detail == "boto3 1.43.11"
    assert states["provided.al2023"].state == "none"
    image = tmp_path / "python3.11"
    assert (image / "bin" / "python3.11").resolve() == Path(sys.executable).resolve()
    assert (image / "bin" / "python3").is_symlink()
    assert (image / "lib" / "python3.11" / "site-packages" / "boto3-1.43.11.dist-info").is_dir()
    assert "runtime python3.11: Collecting boto3" in caplog.text  # the installer's progress
    assert images.image_dir(CUSTOM) is None

    # Another server on the same directory reuses it: no second install.
    again = asyncio.run(RuntimeImages(tmp_path).install([PY]))
    assert again["python3.11"].state == "ready"
    assert calls == [1]


def test_a_failed_install_leaves_the_runtime_without_its_sdk_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_pip(monkeypatch, "print('ERROR: network is unreachable'); raise SystemExit(1)", [])
    images = RuntimeImages(tmp_path)
    states = asyncio.run(images.install([PY]))
    assert states["python3.11"].state == "missing"
    assert "install failed: pip exited 1" in states["python3.11"].detail
    assert "network is unreachable" in states["python3.11"].detail
    assert "could not be installed" in caplog.text
    assert not (tmp_path / "python3.11" / "lib").exists()  # nothing half-made
    assert (tmp_path / "python3.11" / "bin" / "python3.11").exists()  # the runtime still runs


def test_installation_turned_off_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    fake_pip(monkeypatch, INSTALLS, calls)
    states = asyncio.run(RuntimeImages(tmp_path, install=False).install([PY]))
    assert states["python3.11"].state == "missing"
    assert "turned off" in states["python3.11"].detail
    assert calls == []


def test_host_architectures_see_qemu_user_through_binfmt(tmp_path: Path) -> None:
    native = host_architectures(tmp_path)
    assert list(native.values()) == ["native"]
    other = "arm64" if "x86_64" in native else "x86_64"
    handler = "qemu-aarch64" if other == "arm64" else "qemu-x86_64"
    (tmp_path / handler).write_text("disabled\ninterpreter /usr/bin/qemu\n")
    assert other not in host_architectures(tmp_path)
    (tmp_path / handler).write_text("enabled\ninterpreter /usr/bin/qemu\n")
    assert host_architectures(tmp_path)[other] == "qemu-user (binfmt_misc)"


@pytest.mark.parametrize(
    ("runtime", "family"),
    [
        ("python3.12", Family.PYTHON),
        ("nodejs22.x", Family.NODE),
        ("provided.al2023", Family.PROVIDED),
        ("ruby3.3", None),
        ("dotnet8", None),
        ("java21", Family.JAVA),
    ],
)
def test_implemented_families(runtime: str, family: Family | None) -> None:
    assert implemented_family(runtime) is family
