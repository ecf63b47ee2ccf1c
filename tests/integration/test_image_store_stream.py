"""ImageStore unpacking layers while they download (a real registry, images pushed with
skopeo): a layer whose bytes are wrong fails the pull with its digest error however far the
unpacking got, with nothing kept; a pull cancelled midway leaves nothing staged; the progress
a pull reports; several images pulled at once, more than the loop's executor has threads."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests._oci import Registry, manifest_of, missing_tools, push, tar_of_files, write_layout

from lamina.images import InvalidImage
from lamina.images.reference import Registries
from lamina.images.store import ImageStore

pytestmark = [
    pytest.mark.control_plane,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (apt)"),
]

#: compressible, so that a flipped byte breaks the deflate stream itself
TEXT = "".join(f"line {i}: {random.Random(i).random()}\n" for i in range(60_000))


@dataclass
class Images:
    registry: Registry
    #: layer 1 damaged (the inflate fails early), layer 2 fine
    broken_first: str
    #: layer 1 fine (big), layer 2 damaged
    broken_last: str
    broken_layers: list[str]


def _damage(registry: Registry, repository: str, index: int) -> str:
    digest = str(manifest_of(registry, repository, "v1")["layers"][index]["digest"])
    blob = registry.blob_path(digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same length, other bytes: the registry serves it as is
    blob.write_bytes(bytes(data))
    return digest


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    work = tmp_path_factory.mktemp("stream")
    with Registry() as registry:
        text = tar_of_files({"usr/share/text": TEXT})
        big = tar_of_files({"usr/lib/big": os.urandom(6 * 1024 * 1024), "usr/lib/text": TEXT})
        write_layout(work / "first", [text, tar_of_files({"app.py": "x = 1\n"})])
        push(work / "first", registry, "broken-first", "v1")
        write_layout(work / "last", [big, tar_of_files({"etc/text": TEXT})])
        push(work / "last", registry, "broken-last", "v1")
        damaged = [_damage(registry, "broken-first", 0), _damage(registry, "broken-last", 1)]
        for n in range(8):
            write_layout(work / f"many{n}", [big, tar_of_files({"n": str(n)})])
            push(work / f"many{n}", registry, f"many{n}", "v1")
        yield Images(registry, "broken-first", "broken-last", damaged)


def run(root: Path, scenario: object) -> None:
    async def main() -> None:
        store = ImageStore(root, Registries())
        try:
            await scenario(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("repository", ["broken-first", "broken-last"])
def test_a_damaged_layer_fails_with_its_digest_and_leaves_nothing(
    images: Images, tmp_path: Path, repository: str
) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{images.registry.host}/{repository}:v1", "x86_64")
        with pytest.raises(InvalidImage, match="does not match its digest"):
            await store.ensure(image)
        assert store.unpacked(image.digest) is None
        [progress] = store.progress()
        assert progress.phase == "failed" and "digest" in (progress.error or "")

    run(tmp_path, scenario)
    assert os.listdir(tmp_path / "roots") == []
    assert os.listdir(tmp_path / "tmp") == []
    kept = {f"sha256:{name}" for name in os.listdir(tmp_path / "blobs/sha256")}
    assert not kept & set(images.broken_layers)


def test_a_cancelled_pull_leaves_nothing_staged(images: Images, tmp_path: Path) -> None:
    async def scenario(store: ImageStore) -> None:
        image = await store.resolve(f"{images.registry.host}/many0:v1", "x86_64")
        pull = asyncio.create_task(store.ensure(image))
        for _ in range(10_000):  # until the first bytes arrived (10 s at most)
            if any(p.bytes_done for p in store.progress()):
                break
            await asyncio.sleep(0.001)
        assert not pull.done()
        pull.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pull
        assert os.listdir(tmp_path / "tmp") == []
        assert os.listdir(tmp_path / "roots") == []
        assert store.progress()[0].phase == "failed"
        # and the next try pulls it whole
        unpacked = await store.ensure(image)
        assert (unpacked.rootfs / "n").read_text() == "0"

    run(tmp_path, scenario)


def test_many_images_at_once_and_their_progress(images: Images, tmp_path: Path) -> None:
    # more pulls than the loop's default executor has threads: unpacking must not starve the
    # downloads' writes (each pull unpacks on a thread of its own)
    async def scenario(store: ImageStore) -> None:
        host = images.registry.host
        resolved = [await store.resolve(f"{host}/many{n}:v1", "x86_64") for n in range(8)]
        results = await asyncio.wait_for(
            asyncio.gather(*(store.ensure(image) for image in resolved)), timeout=60
        )
        for n, unpacked in enumerate(results):
            assert (unpacked.rootfs / "n").read_text() == str(n)
            assert (unpacked.rootfs / "usr/lib/text").read_text() == TEXT
        for progress in store.progress():
            assert progress.phase == "ready"
            assert progress.layers_done == progress.layers_total == 2
            assert progress.bytes_done == progress.bytes_total > 0

    run(tmp_path, scenario)
    assert len(os.listdir(tmp_path / "roots")) == 8
    assert len(os.listdir(tmp_path / "blobs/sha256")) == 9  # the big layer once
    assert os.listdir(tmp_path / "tmp") == []


def test_the_damaged_layers_are_gzip(images: Images) -> None:
    # the damaged layers are gzip (as pushed), so the damage hits the inflater
    digest = images.broken_layers[0]
    assert images.registry.blob_path(digest).read_bytes()[:2] == gzip.compress(b"")[:2]
