"""Container images for the image-function tests, assembled here from the host's own
runtimes (no Docker): what a Dockerfile `FROM scratch` + `COPY` of an interpreter, its
libraries and a runtime interface client would make.

- `python_base()`: layers holding the host's CPython (the interpreter `make install` found,
  its standard library without tests, `lib-dynload`), the shared libraries `ldd` names for
  it, and AWS's runtime interface client `awslambdaric` from PyPI in its site-packages.
  ENTRYPOINT `python3 -m awslambdaric`, as AWS documents for a non-AWS base image.
- `node_base()`: the host's `node` with its libraries, and Lamina's own Node.js runtime
  client (the files of `lamina.runtimes.node`) as the entry point.
- `image(...)`: an OCI layout of a base plus a layer of function code at /var/task.

Layers are cached on disk between runs (beside the other test downloads), keyed by the host
paths and versions they come from; each test's layout is written fresh.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests._oci import _FIXED_MTIME, tar_of_files, write_layout

import lamina.runtimes

_CACHE = Path(os.environ.get("LAMINA_RUNTIME_CACHE", "/tmp/lamina-test-runtimes")).parent
RIC = "awslambdaric==4.2.2"
#: standard-library parts a function never needs (and the image is smaller without)
_SKIP = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
_PIP = (sys.executable, "-m", "pip", "install", "--quiet", "--no-compile")
_COMPILE = (sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Base:
    """A base image: its layers (uncompressed tars, bottom first) and how it starts."""

    layers: tuple[bytes, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...]


def _libraries(binaries: Iterable[Path]) -> set[str]:
    """The shared libraries (and the dynamic loader) `ldd` resolves for `binaries`."""
    found: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+)\s+\(0x", line)
            if m:
                found.add(m.group(1))
    return found


def _add_file(tar: tarfile.TarFile, host: Path, name: str) -> None:
    """`host`'s content (symlinks followed) at `name` in the layer, with its own mtime (a
    `.pyc` records its source's: a changed one would be compiled again at every start, on a
    read-only root)."""
    info = tar.gettarinfo(str(host.resolve()), arcname=name.lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with open(host, "rb") as f:
        tar.addfile(info, f)


def _dirs(tar: tarfile.TarFile, names: Iterable[str], made: set[str]) -> None:
    for name in sorted(names):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                info = tarfile.TarInfo(parent)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = _FIXED_MTIME
                tar.addfile(info)


def _layer(files: Mapping[str, Path], links: Mapping[str, str] = {}) -> bytes:
    """A layer of host files (name in the image -> host path) and symlinks."""
    path = _CACHE / f"lamina-test-layer-{uuid.uuid4().hex}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()
            _dirs(tar, [*files, *links], made)
            for name in sorted(files):
                _add_file(tar, files[name], name)
            for name, target in sorted(links.items()):
                info = tarfile.TarInfo(name.lstrip("/"))
                info.type = tarfile.SYMTYPE
                info.linkname = target
                info.mode = 0o777
                info.mtime = _FIXED_MTIME
                tar.addfile(info)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _cached(key: str, build: Callable[[], list[bytes]]) -> tuple[bytes, ...]:
    """Layers from the on-disk cache, or built and cached (renamed into place whole)."""
    directory = _CACHE / f"lamina-test-image-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not (directory / "done").exists():
        staging = directory.with_name(f"{directory.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        for i, layer in enumerate(build()):
            (staging / f"{i:02d}.tar").write_bytes(layer)
        (staging / "done").write_text(key)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    return tuple(p.read_bytes() for p in sorted(directory.glob("*.tar")))


def python_prefix() -> Path:
    """The host interpreter's installation (the venv's base, never a shim)."""
    return Path(sys.base_prefix).resolve()


def ric_site() -> Path:
    """AWS's runtime interface client for the host's Python, installed from PyPI (once,
    cached) as `pip install --target` lays it out, and compiled."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = _CACHE / f"lamina-test-ric-{version}-compiled-{RIC}"
    if not (site / ".installed").exists():
        staging = site.with_name(f"{site.name}.{uuid.uuid4().hex[:8]}")
        subprocess.run(
            [*_PIP, "--only-binary=:all:", RIC, "--target", str(staging)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(
            # (checked by hash, not by the source's mtime, which a zip does not keep exactly)
            [*_COMPILE, str(staging)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (staging / ".installed").write_text("")
        shutil.rmtree(site, ignore_errors=True)
        staging.rename(site)
    return site


def python_base() -> Base:
    prefix = python_prefix()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = prefix / "bin" / f"python{version}"
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()

    def build() -> list[bytes]:
        files: dict[str, Path] = {str(binary): binary}
        for libpython in prefix.joinpath("lib").glob("libpython*.so*"):
            files[str(libpython)] = libpython
        for path in stdlib.rglob("*"):
            rel = path.relative_to(stdlib)
            if rel.parts[0] == "site-packages" or rel.parts[0].startswith("config-"):
                continue  # (config-*: the static libpython and the build's makefiles)
            if _SKIP & set(rel.parts):
                continue
            if path.is_file() and (path.suffix != ".pyc" or ".opt-" not in path.name):
                files[str(path)] = path  # (compiled modules too, as a Python image has them)
        dynload = [p for p in files.values() if p.suffix == ".so"]
        for lib in _libraries([binary, *dynload]):
            files[lib] = Path(lib)
        links = {f"/usr/local/bin/python{v}": str(binary) for v in ("3", "")}
        base = _layer(files, links)
        site = ric_site()
        ric = {
            str(stdlib / "site-packages" / p.relative_to(site)): p
            for p in site.rglob("*")
            if p.is_file() and p.name != ".installed"
        }
        # its native part's libraries (libstdc++ ...) that the interpreter's did not bring
        for lib in _libraries(p for p in ric.values() if p.suffix == ".so"):
            if lib not in files:
                ric[lib] = Path(lib)
        return [base, _layer(ric)]

    layers = _cached(f"python 3 {binary} {sys.version} {RIC}", build)
    return Base(layers, ("/usr/local/bin/python3", "-m", "awslambdaric"), (f"PATH={PATH}",))


def node_base() -> Base:
    node = Path(shutil.which("node") or "/usr/bin/node").resolve()
    client = Path(lamina.runtimes.__file__).parent / "node"

    def build() -> list[bytes]:
        files = {"/usr/local/bin/node": node}
        for lib in _libraries([node]):
            files[lib] = Path(lib)
        for path in client.glob("*.mjs"):
            files[f"/var/runtime/{path.name}"] = path
        return [_layer(files)]

    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(client.glob("*.mjs"))))
    layers = _cached(f"node {node} {node.stat().st_size} {digest.hexdigest()}", build)
    return Base(layers, ("node", "/var/runtime/bootstrap.mjs"), (f"PATH={PATH}",))


def image(
    layout: Path,
    base: Base,
    code: Mapping[str, str | bytes],
    *,
    tag: str = "latest",
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = (),
    working_dir: str = "/var/task",
    entrypoint: Sequence[str] | None = None,
    architecture: str = "amd64",
) -> str:
    """Write `base` + a layer of `code` (paths under /var/task) as `layout`:TAG; returns the
    manifest digest."""
    code_layer = tar_of_files({f"var/task/{name}": content for name, content in code.items()})
    return write_layout(
        layout,
        [*base.layers, code_layer],
        tag=tag,
        architecture=architecture,
        entrypoint=base.entrypoint if entrypoint is None else entrypoint,
        cmd=cmd,
        env=[*base.env, *env],
        working_dir=working_dir,
        compress=False,
    )
