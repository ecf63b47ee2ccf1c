"""Reading ImageUris (ECR's form and a user's own registry) and the registry options."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lamina.images.reference import Registries, parse_image_uri

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
MAPPED = Registries(ecr="http://127.0.0.1:5000")


def test_ecr_uri_maps_to_the_configured_registry() -> None:
    ref = parse_image_uri(f"{ECR}/team/app:v1", MAPPED)
    assert ref.host == ECR
    assert ref.repository == "team/app"
    assert ref.tag == "v1"
    assert ref.digest is None
    assert ref.endpoint == "http://127.0.0.1:5000"
    assert ref.uri == f"{ECR}/team/app:v1"


def test_ecr_fips_and_china_hosts_are_ecr() -> None:
    for host in (
        "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
    ):
        assert parse_image_uri(f"{host}/app:1", MAPPED).endpoint == "http://127.0.0.1:5000"


def test_ecr_uri_without_a_configured_registry_is_refused() -> None:
    with pytest.raises(ValueError, match="--image-registry"):
        parse_image_uri(f"{ECR}/app:v1", Registries())


def test_digest_pin() -> None:
    ref = parse_image_uri(f"{ECR}/app@{DIGEST}", MAPPED)
    assert ref.digest == DIGEST
    assert ref.tag is None
    both = parse_image_uri(f"{ECR}/app:v2@{DIGEST}", MAPPED)
    assert (both.tag, both.digest) == ("v2", DIGEST)


def test_no_tag_means_latest() -> None:
    assert parse_image_uri("127.0.0.1:5000/app", Registries()).tag == "latest"


def test_own_registry_loopback_is_http_other_hosts_https() -> None:
    assert parse_image_uri("127.0.0.1:5000/a/b:1", Registries()).endpoint == (
        "http://127.0.0.1:5000"
    )
    assert parse_image_uri("localhost:5000/a:1", Registries()).endpoint == "http://localhost:5000"
    assert parse_image_uri("[::1]:5000/a:1", Registries()).endpoint == "http://[::1]:5000"
    assert parse_image_uri("registry.example:443/a:1", Registries()).endpoint == (
        "https://registry.example:443"
    )
    assert parse_image_uri("registry.example/a:1", Registries()).endpoint == (
        "https://registry.example"
    )


def test_host_mapping_wins() -> None:
    registries = Registries.from_options(
        ["registry.example=http://127.0.0.1:6000", "http://127.0.0.1:5000"], None
    )
    assert registries.ecr == "http://127.0.0.1:5000"
    ref = parse_image_uri("registry.example/a:1", registries)
    assert ref.endpoint == "http://127.0.0.1:6000"
    assert ref.host == "registry.example"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        " 127.0.0.1:5000/a:1",
        "https://127.0.0.1:5000/a:1",
        "app:latest",  # no registry host
        "127.0.0.1:5000/",
        "127.0.0.1:5000",
        "127.0.0.1:5000/App:1",  # uppercase repository
        "127.0.0.1:5000/a:bad tag",
        "127.0.0.1:5000/a:" + "t" * 129,
        "127.0.0.1:5000/a@sha256:abc",
        "127.0.0.1:5000/a@md5:" + "ab" * 16,
        "127.0.0.1:5000/a@" + DIGEST.upper(),
        "127.0.0.1:5000/a/../b:1",
        "127.0.0.1:5000//a:1",
        "127.0.0.1:5000/a:",
        "bad_host!/a:1",
    ],
)
def test_malformed_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        parse_image_uri(uri, MAPPED)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["ftp://x"], "not a registry URL"),
        (["http://127.0.0.1:5000/v2"], "no path"),
        (["http://a:1", "http://b:2"], "already"),
        (["h=http://a:1", "h=http://b:1"], "twice"),
        (["bad host=http://a:1"], "host"),
        (["http://user:pw@a:1"], "credentials"),
    ],
)
def test_bad_registry_options(options: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registries.from_options(options, None)


def test_auth_file_in_the_docker_format(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3:cret").decode()},
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"bob:pw").decode()},
                    "other.example": {"username": "carol", "password": "pw2"},
                }
            }
        )
    )
    registries = Registries.from_options(["http://127.0.0.1:5000"], auth)
    assert registries.auth["127.0.0.1:5000"] == ("alice", "s3:cret")
    assert registries.auth["index.docker.io"] == ("bob", "pw")
    assert registries.auth["other.example"] == ("carol", "pw2")
    # an ECR URI gets the credentials of the registry URL it maps to
    ref = parse_image_uri(f"{ECR}/app:1", registries)
    assert registries.credentials(ref) == ("alice", "s3:cret")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("{}", "auths"),
        ('{"auths": {"h": {"auth": "!!!"}}}', "base64"),
        ('{"auths": {"h": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}', "user"),
        ('{"auths": {"h": {}}}', 'no \\"auth\\"'),
    ],
)
def test_bad_auth_files(tmp_path: Path, content: str, message: str) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(content)
    with pytest.raises(ValueError, match=message):
        Registries.from_options([], auth)


def test_missing_auth_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--image-registry-auth"):
        Registries.from_options([], tmp_path / "absent.json")
