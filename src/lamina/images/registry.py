"""The OCI distribution API, as a client: manifests, image indexes and blobs, with bearer-token
and basic authentication, every byte checked against its digest.

`RegistryClient.resolve` reads an image's manifest (an image index or Docker manifest list
picks the function's platform) and its config; `fetch_blob` streams one blob to a file. Both
raise only the `ImageError`s of `lamina.images`:

- 404 and the registry's MANIFEST_UNKNOWN / NAME_UNKNOWN / BLOB_UNKNOWN -> ImageNotFound;
- 401 / 403 once credentials (or an anonymous token) were offered -> ImageAccessDenied;
- connection failures, timeouts, TLS failures, 429 and 5xx -> RegistryUnreachable;
- a digest that does not match, a manifest or media type Lamina cannot use (Docker schema 1,
  zstd layers, foreign layers), no image for the platform -> InvalidImage.

A request is tried at most twice: once as it is, once more after answering a 401's challenge.
Nothing is retried beyond that: the control plane reports the failure as the function's state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from lamina import limits
from lamina.images import (
    ImageAccessDenied,
    ImageConfig,
    ImageNotFound,
    ImageRef,
    InvalidImage,
    RegistryUnreachable,
    ResolvedImage,
)
from lamina.images.reference import Registries

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_INDEXES = (OCI_INDEX, DOCKER_LIST)

#: layer media types Lamina unpacks (plain tar or gzip; the unpacker reads which from the bytes)
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)
#: Lambda's architectures -> the OCI platform's
PLATFORMS = {"x86_64": "amd64", "arm64": "arm64"}
_LAMBDA_ARCH = {oci: lam for lam, oci in PLATFORMS.items()}

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: what Lamina reads of a manifest or a config at most (both are small JSON documents)
_DOCUMENT_MAX_BYTES = 4 * 1024 * 1024
#: a blob is written to disk in pieces of about this size (hashing and writing on a worker)
_WRITE_CHUNK = 1024 * 1024
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s,]*))')


@dataclass(frozen=True)
class _Fetched:
    body: bytes
    content_type: str
    digest_header: str | None


class RegistryClient:
    """One connection pool to every registry, with the tokens it was given (per registry and
    repository). `aclose` closes the pool; calls after it fail."""

    def __init__(
        self, registries: Registries, *, timeout: float = 30.0, connect_timeout: float = 10.0
    ) -> None:
        self._registries = registries
        # A registry's bytes are hashed as they come: no Content-Encoding decoding may alter them.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=True,
            headers={"Accept-Encoding": "identity", "User-Agent": "lamina"},
        )
        #: (endpoint, repository) -> the Authorization header that last worked there
        self._authorization: dict[tuple[str, str], str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- resolving ---------------------------------------------------------------------------

    async def resolve(self, ref: ImageRef, architecture: str) -> ResolvedImage:
        """`ref`'s manifest for `architecture` ("x86_64" or "arm64") and its config."""
        platform = PLATFORMS.get(architecture)
        if platform is None:
            raise ValueError(f"unknown architecture {architecture!r} (x86_64 or arm64)")
        wanted = ref.digest or ref.tag or "latest"
        fetched = await self._manifest(ref, wanted, pinned=ref.digest)
        document, media_type = _manifest_document(ref, fetched)
        digest = _sha256(fetched.body)
        if media_type in _INDEXES:
            digest = _pick_platform(ref, document, platform)
            fetched = await self._manifest(ref, digest, pinned=digest)
            document, media_type = _manifest_document(ref, fetched)
            if media_type in _INDEXES:
                raise InvalidImage(f"The image {ref.uri} nests an image index in an image index.")
        config_digest, layers = _image_manifest(ref, document)
        config_bytes = await self._small_blob(ref, config_digest)
        return ResolvedImage(
            ref=ref, digest=digest, config=_image_config(ref, config_bytes), layers=layers
        )

    async def _manifest(self, ref: ImageRef, reference: str, pinned: str | None) -> _Fetched:
        path = f"/v2/{ref.repository}/manifests/{reference}"
        fetched = await self._document(ref, path, accept=_ACCEPT, what="manifest")
        actual = _sha256(fetched.body)
        header = fetched.digest_header
        if pinned is not None and actual != pinned:
            raise InvalidImage(
                f"The manifest of {ref.uri} does not match its digest {pinned} (its bytes hash "
                f"to {actual})."
            )
        if header and header.startswith("sha256:") and header != actual:
            raise InvalidImage(
                f"The manifest of {ref.uri} does not match the digest the registry gives "
                f"({header}; its bytes hash to {actual})."
            )
        return fetched

    async def _small_blob(self, ref: ImageRef, digest: str) -> bytes:
        fetched = await self._document(
            ref, f"/v2/{ref.repository}/blobs/{digest}", accept=None, what="config"
        )
        if _sha256(fetched.body) != digest:
            raise InvalidImage(f"The config of {ref.uri} does not match its digest {digest}.")
        return fetched.body

    async def _document(self, ref: ImageRef, path: str, accept: str | None, what: str) -> _Fetched:
        response = await self._send(ref, path, accept)
        try:
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > _DOCUMENT_MAX_BYTES:
                    raise InvalidImage(
                        f"The {what} of {ref.uri} is larger than {_DOCUMENT_MAX_BYTES} bytes."
                    )
        except httpx.TransportError as e:
            raise _unreachable(ref, e) from e
        finally:
            await response.aclose()
        return _Fetched(
            body=bytes(body),
            content_type=response.headers.get("content-type", "").split(";")[0].strip(),
            digest_header=response.headers.get("docker-content-digest"),
        )

    # -- blobs -------------------------------------------------------------------------------

    async def fetch_blob(
        self,
        ref: ImageRef,
        digest: str,
        size: int,
        dest: Path,
        progress: Callable[[int], None] | None = None,
        written: Callable[[int], None] | None = None,
    ) -> None:
        """Stream blob `digest` of `size` bytes into the new file `dest`, calling `progress`
        with each piece's length as it arrives, and `written` (on a worker thread) with each
        piece's length once it is in `dest` for another reader to see (so a layer can be
        unpacked while it downloads). InvalidImage if the bytes are not `size` long or do not
        hash to `digest`; the caller removes `dest` after any failure."""
        response = await self._send(ref, f"/v2/{ref.repository}/blobs/{digest}", accept=None)
        hasher = hashlib.sha256()
        received = 0
        try:
            # opened here, not on a worker thread: a pull cancelled meanwhile would leave the
            # file open (and made after the caller removed it)
            file = open(dest, "xb")  # noqa: SIM115, ASYNC230 - closed below
            try:
                pending = bytearray()
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > size:
                        raise InvalidImage(
                            f"The layer {digest} of {ref.uri} is larger than its manifest says "
                            f"({size} bytes)."
                        )
                    pending += chunk
                    if len(pending) >= _WRITE_CHUNK:
                        await asyncio.to_thread(_write, file, hasher, bytes(pending), written)
                        pending.clear()
                    if progress is not None:
                        progress(len(chunk))
                await asyncio.to_thread(_write, file, hasher, bytes(pending), written)
            finally:
                file.close()  # here too: an await could be cancelled before it closes
        except httpx.TransportError as e:
            raise _unreachable(ref, e) from e
        finally:
            await response.aclose()
        if received != size:
            raise InvalidImage(
                f"The layer {digest} of {ref.uri} is {received} bytes, not the {size} its "
                "manifest says."
            )
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise InvalidImage(
                f"The layer {digest} of {ref.uri} does not match its digest (its bytes hash to "
                f"sha256:{hasher.hexdigest()})."
            )

    # -- requests and authentication ---------------------------------------------------------

    async def _send(self, ref: ImageRef, path: str, accept: str | None) -> httpx.Response:
        """GET `path` at `ref`'s registry (streamed), answering one 401 challenge; the response
        is a success (2xx) or an ImageError is raised."""
        key = (ref.endpoint, ref.repository)
        url = ref.endpoint + path
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if key in self._authorization:
                headers["Authorization"] = self._authorization[key]
            try:
                response = await self._http.send(
                    self._http.build_request("GET", url, headers=headers), stream=True
                )
            except httpx.TransportError as e:
                raise _unreachable(ref, e) from e
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("www-authenticate", "")
                await response.aclose()
                self._authorization[key] = await self._authenticate(ref, challenge)
                continue
            if response.is_success:
                return response
            try:
                body = await response.aread()
            except httpx.TransportError:
                body = b""
            finally:
                await response.aclose()
            raise _status_error(ref, response.status_code, body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authenticate(self, ref: ImageRef, challenge: str) -> str:
        """The Authorization header answering `challenge` (a WWW-Authenticate value)."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _CHALLENGE_PARAM.finditer(rest)
        }
        credentials = self._registries.credentials(ref)
        if scheme.lower() == "basic":
            if credentials is None:
                raise ImageAccessDenied(
                    f"The registry at {ref.endpoint} asks for credentials for {ref.uri}, and "
                    "Lamina has none for it (lamina serve --image-registry-auth FILE)."
                )
            return _basic(credentials)
        if scheme.lower() != "bearer" or not params.get("realm"):
            raise ImageAccessDenied(
                f"The registry at {ref.endpoint} refused {ref.uri} with an authentication "
                f"challenge Lamina does not answer ({challenge or 'none'!r})."
            )
        realm = params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise ImageAccessDenied(f"The registry at {ref.endpoint} names a bad realm {realm!r}.")
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": _basic(credentials)} if credentials else {}
        try:
            response = await self._http.get(realm, params=query, headers=headers)
        except httpx.TransportError as e:
            raise _unreachable(ref, e) from e
        if response.status_code in (401, 403):
            raise ImageAccessDenied(
                f"The token service of {ref.endpoint} refused the credentials for {ref.uri} "
                f"(HTTP {response.status_code})."
            )
        if not response.is_success:
            raise RegistryUnreachable(
                f"The token service of {ref.endpoint} failed (HTTP {response.status_code})."
            )
        try:
            answer = response.json()
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ImageAccessDenied(f"The token service of {ref.endpoint} gave no token.")
        return f"Bearer {token}"


def _basic(credentials: tuple[str, str]) -> str:
    pair = f"{credentials[0]}:{credentials[1]}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _write(file: BinaryIO, hasher: Any, data: bytes, written: Callable[[int], None] | None) -> None:
    hasher.update(data)
    file.write(data)
    if written is not None:
        file.flush()
        written(len(data))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _unreachable(ref: ImageRef, error: Exception) -> RegistryUnreachable:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "could not be reached"
    detail = str(error) or type(error).__name__
    return RegistryUnreachable(f"The registry at {ref.endpoint} {kind} ({detail}).")


def _status_error(ref: ImageRef, status: int, body: bytes) -> Exception:
    codes: list[str] = []
    messages: list[str] = []
    try:
        for error in json.loads(body).get("errors", []):
            codes.append(str(error.get("code", "")))
            messages.append(str(error.get("message", "")))
    except (ValueError, AttributeError, TypeError):
        pass
    detail = "; ".join(m for m in messages if m) or f"HTTP {status}"
    if status == 404 or _NOT_FOUND_CODES.intersection(codes):
        return ImageNotFound(f"The image {ref.uri} does not exist at {ref.endpoint} ({detail}).")
    if status in (401, 403):
        return ImageAccessDenied(
            f"The registry at {ref.endpoint} denied access to {ref.uri} ({detail})."
        )
    if status == 429 or status >= 500:
        return RegistryUnreachable(f"The registry at {ref.endpoint} failed ({detail}).")
    return InvalidImage(f"The registry at {ref.endpoint} refused {ref.uri} ({detail}).")


# -- reading manifests and configs ----------------------------------------------------------


def _manifest_document(ref: ImageRef, fetched: _Fetched) -> tuple[dict[str, Any], str]:
    try:
        document = json.loads(fetched.body)
    except ValueError:
        raise InvalidImage(f"The manifest of {ref.uri} is not JSON.") from None
    if not isinstance(document, dict):
        raise InvalidImage(f"The manifest of {ref.uri} is not a JSON object.")
    if document.get("schemaVersion") == 1:
        raise InvalidImage(
            f"The image {ref.uri} has a Docker schema 1 manifest, which Lamina does not support "
            "(push it again with a current tool)."
        )
    media_type = document.get("mediaType") or fetched.content_type
    if media_type not in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST):
        # OCI makes mediaType optional: tell an index from a manifest by its members
        if isinstance(document.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(document.get("layers"), list):
            media_type = OCI_MANIFEST
        else:
            raise InvalidImage(
                f"The manifest of {ref.uri} has media type {media_type!r}, which Lamina does "
                "not support."
            )
    return document, media_type


def _pick_platform(ref: ImageRef, index: dict[str, Any], platform: str) -> str:
    """The digest of the index's linux/`platform` manifest."""
    offered: list[str] = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict):
            continue
        p = entry.get("platform") or {}
        if not isinstance(p, dict):
            continue
        os_name, arch = p.get("os"), p.get("architecture")
        if os_name in (None, "unknown") or arch in (None, "unknown"):
            continue  # attestations and other non-images
        offered.append(f"{os_name}/{arch}" + (f"/{p['variant']}" if p.get("variant") else ""))
        if os_name == "linux" and arch == platform:
            digest = entry.get("digest")
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise InvalidImage(f"The image index of {ref.uri} has a bad digest {digest!r}.")
            return digest
    has = ", ".join(sorted(set(offered))) or "none"
    raise InvalidImage(
        f"The image {ref.uri} has no linux/{platform} image (its index offers: {has})."
    )


def _image_manifest(
    ref: ImageRef, manifest: dict[str, Any]
) -> tuple[str, tuple[tuple[str, int], ...]]:
    config = manifest.get("config")
    if not isinstance(config, dict) or not _is_digest(config.get("digest")):
        raise InvalidImage(f"The manifest of {ref.uri} names no config blob.")
    layers: list[tuple[str, int]] = []
    for layer in manifest.get("layers") or []:
        if not isinstance(layer, dict):
            raise InvalidImage(f"The manifest of {ref.uri} has a malformed layer.")
        media_type, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
        if isinstance(media_type, str) and "zstd" in media_type:
            raise InvalidImage(
                f"The image {ref.uri} has zstd-compressed layers ({media_type}), which are not "
                "supported: push it with gzip-compressed layers."
            )
        if media_type not in LAYER_TYPES:
            raise InvalidImage(
                f"The image {ref.uri} has a layer of media type {media_type!r}, which is not "
                "supported (tar or tar+gzip layers only)."
            )
        if not isinstance(digest, str) or not _is_digest(digest):
            raise InvalidImage(f"The manifest of {ref.uri} has a layer without a sha256 digest.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidImage(f"The manifest of {ref.uri} has a layer without a size.")
        layers.append((digest, size))
    if not layers:
        raise InvalidImage(f"The image {ref.uri} has no layers.")
    if sum(size for _, size in layers) > limits.IMAGE_MAX_BYTES:
        raise InvalidImage(
            f"The image {ref.uri} is larger than Lambda's limit of "
            f"{limits.IMAGE_MAX_BYTES // 1024**3} GB."
        )
    return config["digest"], tuple(layers)


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _image_config(ref: ImageRef, raw: bytes) -> ImageConfig:
    try:
        document = json.loads(raw)
    except ValueError:
        raise InvalidImage(f"The config of {ref.uri} is not JSON.") from None
    if not isinstance(document, dict):
        raise InvalidImage(f"The config of {ref.uri} is not a JSON object.")
    run = document.get("config") or {}
    if not isinstance(run, dict):
        raise InvalidImage(f"The config of {ref.uri} has a malformed `config` member.")
    env: dict[str, str] = {}
    for item in _strings(ref, run.get("Env"), "Env"):
        name, _, value = item.partition("=")
        env[name] = value
    arch = document.get("architecture")
    return ImageConfig(
        entrypoint=_strings(ref, run.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(ref, run.get("Cmd"), "Cmd"),
        env=env,
        working_dir=_string(ref, run.get("WorkingDir"), "WorkingDir"),
        user=_string(ref, run.get("User"), "User"),
        # an unknown architecture is kept as the image names it: it matches no function's
        architecture=_LAMBDA_ARCH.get(arch, arch) if isinstance(arch, str) and arch else "x86_64",
    )


def _strings(ref: ImageRef, value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidImage(f"The config of {ref.uri} has a malformed {name}.")
    return tuple(value)


def _string(ref: ImageRef, value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidImage(f"The config of {ref.uri} has a malformed {name}.")
    return value
