"""Reading manifests, indexes and configs as a registry returns them (the documents are built
here; tests/integration/test_image_store.py reads them from a real registry)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.images import ImageRef, InvalidImage
from lamina.images.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    _Fetched,
    _image_config,
    _image_manifest,
    _manifest_document,
    _pick_platform,
)

REF = ImageRef(
    uri="127.0.0.1:5000/app:v1",
    host="127.0.0.1:5000",
    repository="app",
    tag="v1",
    digest=None,
    endpoint="http://127.0.0.1:5000",
)
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def manifest(*layer_types: str) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1},
        "layers": [{"mediaType": t, "digest": D2, "size": 10} for t in layer_types],
    }


def test_layer_media_types() -> None:
    config, layers = _image_manifest(
        REF,
        manifest(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar",
        ),
    )
    assert config == D1 and layers == ((D2, 10),) * 3
    with pytest.raises(InvalidImage, match=r"zstd.*not supported"):
        _image_manifest(REF, manifest("application/vnd.oci.image.layer.v1.tar+zstd"))
    with pytest.raises(InvalidImage, match="not supported"):
        _image_manifest(REF, manifest("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"))
    with pytest.raises(InvalidImage, match="no layers"):
        _image_manifest(REF, manifest())


def test_oversized_image_is_refused() -> None:
    m = manifest("application/vnd.oci.image.layer.v1.tar")
    m["layers"][0]["size"] = 11 * 1024**3
    with pytest.raises(InvalidImage, match="limit"):
        _image_manifest(REF, m)


def test_kinds_of_manifest() -> None:
    def kind(document: dict[str, Any], content_type: str = "") -> str:
        return _manifest_document(REF, _Fetched(json.dumps(document).encode(), content_type, None))[
            1
        ]

    assert kind({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []}) == DOCKER_LIST
    assert kind({"schemaVersion": 2, "layers": []}, DOCKER_MANIFEST) == DOCKER_MANIFEST
    assert kind({"schemaVersion": 2, "manifests": []}) == OCI_INDEX  # mediaType is optional
    with pytest.raises(InvalidImage, match="schema 1"):
        kind({"schemaVersion": 1, "fsLayers": []})
    with pytest.raises(InvalidImage, match="not JSON"):
        _manifest_document(REF, _Fetched(b"<html>", "text/html", None))


def test_platform_selection() -> None:
    index = {
        "manifests": [
            {"digest": D1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": D2, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": D3, "platform": {"os": "unknown", "architecture": "unknown"}},
        ]
    }
    assert _pick_platform(REF, index, "amd64") == D1
    assert _pick_platform(REF, index, "arm64") == D2
    with pytest.raises(InvalidImage, match=r"no linux/s390x .*linux/amd64, linux/arm64/v8\)"):
        _pick_platform(REF, index, "s390x")


def test_config() -> None:
    raw = json.dumps(
        {
            "architecture": "arm64",
            "config": {
                "Entrypoint": ["/lambda-entrypoint.sh"],
                "Cmd": None,
                "Env": ["PATH=/usr/bin", "EMPTY=", "EQ=a=b"],
                "WorkingDir": "/var/task",
            },
        }
    ).encode()
    config = _image_config(REF, raw)
    assert config.entrypoint == ("/lambda-entrypoint.sh",)
    assert config.cmd == ()
    assert config.env == {"PATH": "/usr/bin", "EMPTY": "", "EQ": "a=b"}
    assert (config.working_dir, config.user, config.architecture) == ("/var/task", "", "arm64")
    assert _image_config(REF, b'{"architecture": "s390x"}').architecture == "s390x"
    with pytest.raises(InvalidImage, match="Cmd"):
        _image_config(REF, b'{"config": {"Cmd": "not a list"}}')
