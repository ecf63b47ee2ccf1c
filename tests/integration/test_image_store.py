"""ImageStore against a real registry (Debian's docker-registry) holding images built here and
pushed with skopeo: resolving by tag and digest, platform selection, both auth schemes, every
failure as its ImageError with nothing half-written, layers shared, one pull per image."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from tests._oci import (
    BearerProxy,
    Registry,
    manifest_of,
    missing_tools,
    push,
    push_index,
    tar_of_files,
    write_layout,
)
from tests.cluster._engines import free_port

from lamina.images import (
    ImageAccessDenied,
    ImageNotFound,
    InvalidImage,
    RegistryUnreachable,
)
from lamina.images.reference import Registries
from lamina.images.store import ImageStore

pytestmark = [
    pytest.mark.control_plane,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (apt)"),
]

T = TypeVar("T")
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

BASE = tar_of_files(
    {
        "bin/hello": "#!/bin/sh\necho hello\n",
        "etc/os-release": "ID=lamina-test\n",
        "etc/remove-me": "lower layer\n",
    }
)


@dataclass
class Pushed:
    registry: Registry
    app: str  # digest of app:v1
    other: str  # digest of other:v1
    amd64: str
    arm64: str
    docker: str
    corrupt_layer: str


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    work = tmp_path_factory.mktemp("images")
    with Registry() as registry:
        app_layout = work / "app"
        write_layout(
            app_layout,
            [BASE, tar_of_files({"var/task/app.py": "print('app')\n", "etc/.wh.remove-me": ""})],
            entrypoint=["/bin/hello"],
            cmd=["app.handler"],
            env=("PATH=/usr/bin:/bin", "GREETING=a=b"),
            working_dir="/var/task",
            user="1000:1000",
        )
        app = push(app_layout, registry, "team/app", "v1")
        other_layout = work / "other"
        write_layout(other_layout, [BASE, tar_of_files({"var/task/other.py": "x = 1\n"})])
        other = push(other_layout, registry, "other", "v1")
        arches = {}
        for arch in ("amd64", "arm64"):
            layout = work / f"multi-{arch}"
            write_layout(layout, [tar_of_files({"arch": arch})], architecture=arch)
            arches[arch] = push(layout, registry, "multi", f"only-{arch}")
        push_index(
            registry,
            "multi",
            "v1",
            [(arches["amd64"], "linux/amd64"), (arches["arm64"], "linux/arm64")],
        )
        push_index(registry, "multi", "amd-only", [(arches["amd64"], "linux/amd64")])
        docker_layout = work / "docker"
        write_layout(docker_layout, [tar_of_files({"docker": "yes"})])
        docker = push(docker_layout, registry, "docker", "v1", docker_format=True)
        corrupt_layout = work / "corrupt"
        corrupt_tar = tar_of_files({"big": os.urandom(4096)})
        write_layout(corrupt_layout, [corrupt_tar])
        push(corrupt_layout, registry, "corrupt", "v1")
        [corrupt_layer] = [
            layer["digest"] for layer in manifest_of(registry, "corrupt", "v1")["layers"]
        ]
        blob = registry.blob_path(corrupt_layer)
        data = bytearray(blob.read_bytes())
        data[1000] ^= 0xFF  # same length, other bytes: the registry serves it all the same
        blob.write_bytes(bytes(data))
        evil_layout = work / "evil"
        write_layout(evil_layout, [_escaping_layer()])
        push(evil_layout, registry, "evil", "v1")
        yield Pushed(registry, app, other, arches["amd64"], arches["arm64"], docker, corrupt_layer)


def _escaping_layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"out"))
    return buf.getvalue()


def run(
    root: Path, fn: Callable[[ImageStore], Awaitable[T]], registries: Registries | None = None
) -> T:
    async def main() -> T:
        store = ImageStore(root, registries or Registries())
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_resolve_by_tag_and_digest_then_ensure(pushed: Pushed, tmp_path: Path) -> None:
    host = pushed.registry.host

    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{host}/team/app:v1", "x86_64")
        assert image.digest == pushed.app
        assert image.code_sha256 == pushed.app.split(":")[1]
        assert image.resolved_uri == f"{host}/team/app@{pushed.app}"
        assert len(image.layers) == 2
        config = image.config
        assert config.entrypoint == ("/bin/hello",)
        assert config.cmd == ("app.handler",)
        assert config.env == {"PATH": "/usr/bin:/bin", "GREETING": "a=b"}
        assert (config.working_dir, config.user, config.architecture) == (
            "/var/task",
            "1000:1000",
            "x86_64",
        )
        pinned = await store.resolve(f"{host}/team/app@{pushed.app}", "x86_64")
        assert pinned.digest == pushed.app and pinned.ref.tag is None
        assert store.unpacked(image.digest) is None

        unpacked = await store.ensure(image)
        assert unpacked.rootfs == tmp_path / "roots" / image.code_sha256 / "rootfs"
        assert (unpacked.rootfs / "bin/hello").read_text().startswith("#!/bin/sh")
        assert (unpacked.rootfs / "var/task/app.py").exists()
        assert not (unpacked.rootfs / "etc/remove-me").exists()  # the upper layer's whiteout
        assert (unpacked.rootfs / "proc").is_dir() and (unpacked.rootfs / "etc/hosts").is_file()
        assert store.unpacked(image.digest) == unpacked
        [progress] = store.progress()
        assert progress.phase == "ready"
        assert progress.layers_done == progress.layers_total == 2
        assert progress.bytes_done == progress.bytes_total == sum(s for _, s in image.layers)
        assert os.listdir(tmp_path / "tmp") == []

    run(tmp_path, scenario)

    # a new store (a restarted server) knows the image without the registry
    async def restarted(store: ImageStore) -> None:
        found = store.unpacked(pushed.app)
        assert found is not None and found.config.cmd == ("app.handler",)

    run(tmp_path, restarted)


def test_ecr_uri_through_the_configured_registry(pushed: Pushed, tmp_path: Path) -> None:
    registries = Registries.from_options([pushed.registry.url], None)
    image = run(tmp_path, lambda s: s.resolve(f"{ECR}/team/app:v1", "x86_64"), registries)
    assert image.digest == pushed.app
    assert image.resolved_uri == f"{ECR}/team/app@{pushed.app}"


def test_index_picks_the_platform(pushed: Pushed, tmp_path: Path) -> None:
    uri = f"{pushed.registry.host}/multi:v1"

    async def scenario(store: ImageStore) -> None:
        amd = await store.resolve(uri, "x86_64")
        arm = await store.resolve(uri, "arm64")
        assert (amd.digest, arm.digest) == (pushed.amd64, pushed.arm64)
        assert (amd.config.architecture, arm.config.architecture) == ("x86_64", "arm64")
        unpacked = await store.ensure(arm)
        assert (unpacked.rootfs / "arch").read_text() == "arm64"
        with pytest.raises(InvalidImage, match=r"no linux/arm64 .*linux/amd64"):
            await store.resolve(f"{pushed.registry.host}/multi:amd-only", "arm64")

    run(tmp_path, scenario)


def test_docker_schema2_image(pushed: Pushed, tmp_path: Path) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{pushed.registry.host}/docker:v1", "x86_64")
        assert image.digest == pushed.docker
        assert ((await store.ensure(image)).rootfs / "docker").read_text() == "yes"

    run(tmp_path, scenario)


@pytest.mark.parametrize("name", ["team/app:nope", "nobody/here:v1", "team/app@sha256:" + "0" * 64])
def test_missing_image(pushed: Pushed, tmp_path: Path, name: str) -> None:
    with pytest.raises(ImageNotFound):
        run(tmp_path, lambda s: s.resolve(f"{pushed.registry.host}/{name}", "x86_64"))


def test_malformed_uri_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        run(tmp_path, lambda s: s.resolve("127.0.0.1:1/Bad:tag", "x86_64"))


def test_unreachable_registry(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnreachable):
        run(tmp_path, lambda s: s.resolve(f"127.0.0.1:{free_port()}/app:v1", "x86_64"))


def test_corrupt_layer_leaves_nothing(
    pushed: Pushed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{pushed.registry.host}/corrupt:v1", "x86_64")
        assert image.layers[0][0] == pushed.corrupt_layer
        with pytest.raises(InvalidImage, match="does not match its digest"):
            await store.ensure(image)
        assert store.unpacked(image.digest) is None
        [progress] = store.progress()
        assert progress.phase == "failed" and "digest" in (progress.error or "")

    with caplog.at_level(logging.INFO, logger="lamina.images"):
        run(tmp_path, scenario)
    for sub in ("roots", "blobs/sha256", "tmp"):
        assert os.listdir(tmp_path / sub) == [], sub
    assert "failed" in caplog.text


def test_escaping_layer_leaves_nothing(pushed: Pushed, tmp_path: Path) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{pushed.registry.host}/evil:v1", "x86_64")
        with pytest.raises(InvalidImage, match="leaving the root"):
            await store.ensure(image)

    run(tmp_path / "images", scenario)
    assert os.listdir(tmp_path / "images/roots") == []
    assert os.listdir(tmp_path / "images/tmp") == []
    assert not list(tmp_path.rglob("escaped"))


def test_shared_layer_stored_once(
    pushed: Pushed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = pushed.registry.host

    async def scenario(store: ImageStore) -> None:
        app = await store.resolve(f"{host}/team/app:v1", "x86_64")
        other = await store.resolve(f"{host}/other:v1", "x86_64")
        assert app.layers[0] == other.layers[0]
        await asyncio.gather(store.ensure(app), store.ensure(other))

    with caplog.at_level(logging.INFO, logger="lamina.images"):
        run(tmp_path, scenario)
    assert len(os.listdir(tmp_path / "blobs/sha256")) == 3
    assert len(os.listdir(tmp_path / "roots")) == 2
    assert caplog.text.count(" cached") == 1  # the second image found the base layer there
    assert caplog.text.count("pulled ") == 2


def test_concurrent_ensures_pull_once(
    pushed: Pushed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{pushed.registry.host}/team/app:v1", "x86_64")
        results = await asyncio.gather(*(store.ensure(image) for _ in range(5)))
        assert len({r.rootfs for r in results}) == 1

    with caplog.at_level(logging.INFO, logger="lamina.images"):
        run(tmp_path, scenario)
    assert caplog.text.count("pulled ") == 1
    assert len(os.listdir(tmp_path / "roots")) == 1


# -- authentication ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str]]:
    with Registry(auth=("alice", "wonderland")) as registry:
        layout = tmp_path_factory.mktemp("basic") / "image"
        write_layout(layout, [tar_of_files({"secret": "yes"})])
        yield registry, push(layout, registry, "private", "v1")


def _with_auth(host: str, user: str, password: str, tmp_path: Path) -> Registries:
    auth = tmp_path / f"auth-{user}-{password}.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    auth.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return Registries.from_options([], auth)


def test_basic_auth(basic_registry: tuple[Registry, str], tmp_path: Path) -> None:
    registry, digest = basic_registry
    uri = f"{registry.host}/private:v1"
    registries = _with_auth(registry.host, "alice", "wonderland", tmp_path)

    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(uri, "x86_64")
        assert image.digest == digest
        assert ((await store.ensure(image)).rootfs / "secret").read_text() == "yes"

    run(tmp_path / "store", scenario, registries)


def test_basic_auth_refused(basic_registry: tuple[Registry, str], tmp_path: Path) -> None:
    registry, _ = basic_registry
    uri = f"{registry.host}/private:v1"
    wrong = _with_auth(registry.host, "alice", "not-it", tmp_path)
    with pytest.raises(ImageAccessDenied):
        run(tmp_path / "a", lambda s: s.resolve(uri, "x86_64"), wrong)
    with pytest.raises(ImageAccessDenied, match="none"):
        run(tmp_path / "b", lambda s: s.resolve(uri, "x86_64"))


def test_bearer_token_flow(pushed: Pushed, tmp_path: Path) -> None:
    with BearerProxy(pushed.registry, credentials=("bob", "builder")) as proxy:
        uri = f"{proxy.host}/team/app:v1"
        registries = _with_auth(proxy.host, "bob", "builder", tmp_path)

        async def scenario(store: ImageStore) -> None:
            image = await store.resolve(uri, "x86_64")
            assert image.digest == pushed.app
            assert ((await store.ensure(image)).rootfs / "var/task/app.py").exists()

        run(tmp_path / "store", scenario, registries)
        # one token served every request of the pull (manifest, config, both layers)
        assert proxy.token_requests == 1

        with pytest.raises(ImageAccessDenied):
            run(tmp_path / "anonymous", lambda s: s.resolve(uri, "x86_64"))
        wrong = _with_auth(proxy.host, "bob", "nope", tmp_path)
        with pytest.raises(ImageAccessDenied):
            run(tmp_path / "wrong", lambda s: s.resolve(uri, "x86_64"), wrong)


def test_anonymous_bearer_token(pushed: Pushed, tmp_path: Path) -> None:
    with BearerProxy(pushed.registry) as proxy:
        image = run(tmp_path, lambda s: s.resolve(f"{proxy.host}/other:v1", "x86_64"))
        assert image.digest == pushed.other
        assert proxy.token_requests == 1
