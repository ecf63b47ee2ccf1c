"""Reading an `ImageUri` and knowing where its registry answers.

Lambda's URIs name ECR (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG` or `REPO@sha256:HEX`);
Lamina never contacts AWS, so an ECR host is mapped to the registry the operator names with
`lamina serve --image-registry URL` (every ECR host maps to it). Any other host is the user's
own registry, reached as written (plain HTTP on loopback, HTTPS elsewhere) unless
`--image-registry HOST=URL` maps it somewhere else. Credentials come from an auth file in the
format skopeo, podman and docker write (`{"auths": {"host:port": {"auth": base64(user:pass)}}}`).

`parse_image_uri` raises ValueError with a message fit for InvalidParameterValueException;
`Registries.from_options` raises ValueError with a message fit for the command line.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from lamina.images import ImageRef

#: ECR's registry hosts (commercial, FIPS and China partitions)
_ECR_HOST = re.compile(
    r"[0-9]{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?", re.IGNORECASE
)
#: a registry host: DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
# The distribution spec's grammar for repository names, tags and digests.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: the distribution spec's limit on a repository name (host included, as docker counts it)
_NAME_MAX = 255
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Registries:
    """Where image registries answer and the credentials Lamina has for them:
    `lamina serve --image-registry [HOST=]URL` (repeatable) and `--image-registry-auth FILE`."""

    #: the URL every ECR host (ACCOUNT.dkr.ecr.REGION.amazonaws.com) maps to
    ecr: str | None = None
    #: "host[:port]" as written in an ImageUri -> the URL its registry answers at
    hosts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: registry "host[:port]" (the URI's or the URL's) -> (user, password)
    auth: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_options(cls, registries: Sequence[str], auth_file: Path | None) -> Registries:
        """Read the command line's options; ValueError with a clear message on a bad one."""
        ecr: str | None = None
        hosts: dict[str, str] = {}
        for option in registries:
            host, sep, url = option.partition("=")
            if not sep:
                host, url = "", option
            url = _registry_url(url, option)
            if not host:
                if ecr is not None:
                    raise ValueError(
                        f"--image-registry {option}: the URL for ECR image URIs is already "
                        f"{ecr} (give other registries as HOST=URL)"
                    )
                ecr = url
                continue
            host = host.strip().lower()
            if not _HOST.fullmatch(host):
                raise ValueError(f"--image-registry {option}: {host!r} is not a host[:port]")
            if host in hosts:
                raise ValueError(f"--image-registry {option}: {host} is mapped twice")
            hosts[host] = url
        auth = _read_auth_file(auth_file) if auth_file is not None else {}
        return cls(ecr=ecr, hosts=MappingProxyType(hosts), auth=MappingProxyType(auth))

    def credentials(self, ref: ImageRef) -> tuple[str, str] | None:
        """The (user, password) for `ref`'s registry: those given for the URI's host, else
        those given for the host of the URL it answers at."""
        found = self.auth.get(ref.host.lower())
        if found is None:
            found = self.auth.get(urlsplit(ref.endpoint).netloc.lower())
        return found


def _registry_url(url: str, option: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"--image-registry {option}: {url!r} is not a registry URL (http://HOST[:PORT] or "
            "https://HOST[:PORT])"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"--image-registry {option}: a registry URL has no path ({url!r}); the registry "
            "API answers at its root"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"--image-registry {option}: give credentials in --image-registry-auth, not the URL"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _read_auth_file(path: Path) -> dict[str, tuple[str, str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--image-registry-auth {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"--image-registry-auth {path}: not JSON ({e})") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError(f'--image-registry-auth {path}: no "auths" object')
    found: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        # docker writes Docker Hub's key as a URL ("https://index.docker.io/v1/")
        host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
        host = host.lower()
        if not isinstance(entry, dict):
            raise ValueError(f"--image-registry-auth {path}: the entry for {key} is not an object")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                pair = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError(
                    f'--image-registry-auth {path}: the "auth" of {key} is not base64 of '
                    '"user:password"'
                ) from None
            user, sep, password = pair.partition(":")
            if not sep:
                raise ValueError(
                    f'--image-registry-auth {path}: the "auth" of {key} is not "user:password"'
                )
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            user, password = entry["username"], entry["password"]
        else:
            raise ValueError(
                f'--image-registry-auth {path}: the entry for {key} has no "auth" '
                '(base64 of "user:password")'
            )
        found[host] = (user, password)
    return found


def is_ecr_host(host: str) -> bool:
    """Whether `host` (without a port) is an ECR registry's."""
    return _ECR_HOST.fullmatch(host) is not None


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") and ":" in host else host
    name = name.strip("[]")
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_image_uri(uri: str, registries: Registries) -> ImageRef:
    """Read `uri` (`HOST[:PORT]/REPO[:TAG][@sha256:HEX]`; no tag and no digest means
    `latest`, as docker reads it). ValueError, with a message fit for
    InvalidParameterValueException, for a malformed URI or for an ECR URI when no registry URL
    is set for ECR."""
    if not isinstance(uri, str) or not uri or uri != uri.strip():
        raise ValueError(f"Image URI {uri!r} is not valid: it has surrounding blanks or is empty.")
    if "://" in uri:
        raise ValueError(
            f"Image URI {uri} is not valid: give HOST[:PORT]/REPOSITORY:TAG or "
            "HOST[:PORT]/REPOSITORY@sha256:DIGEST, without a scheme."
        )
    host, slash, rest = uri.partition("/")
    if not slash or not rest:
        raise ValueError(
            f"Image URI {uri} is not valid: it needs a registry host and a repository "
            "(HOST[:PORT]/REPOSITORY:TAG)."
        )
    if not _HOST.fullmatch(host) or not (
        "." in host or ":" in host or host.lower() in _LOOPBACK_NAMES
    ):
        raise ValueError(
            f"Image URI {uri} is not valid: {host!r} is not a registry host (a Lambda image "
            "URI names its registry, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG)."
        )
    name, at, digest = rest.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(
            f"Image URI {uri} is not valid: the digest must be sha256: and 64 lowercase hex digits."
        )
    repository, tag = name, None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ValueError(f"Image URI {uri} is not valid: {tag!r} is not a valid tag.")
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError(
            f"Image URI {uri} is not valid: {repository!r} is not a valid repository name "
            "(lowercase letters, digits and separators . _ - /)."
        )
    if len(host) + 1 + len(repository) > _NAME_MAX:
        raise ValueError(f"Image URI {uri} is not valid: the repository name is too long.")
    if tag is None and not at:
        tag = "latest"
    return ImageRef(
        uri=uri,
        host=host,
        repository=repository,
        tag=tag,
        digest=digest if at else None,
        endpoint=_endpoint(uri, host, registries),
    )


def _endpoint(uri: str, host: str, registries: Registries) -> str:
    mapped = registries.hosts.get(host.lower())
    if mapped is not None:
        return mapped
    if is_ecr_host(host):
        if registries.ecr is None:
            raise ValueError(
                f"Image URI {uri} names Amazon ECR, and this Lamina has no registry for ECR "
                "image URIs (lamina serve --image-registry URL)."
            )
        return registries.ecr
    scheme = "http" if _is_loopback(host) else "https"
    return f"{scheme}://{host.lower()}"
