"""A real OCI registry for the tests, and images built and pushed to it with real tools.

- `Registry`: Debian's `docker-registry` (the CNCF distribution registry) on a free loopback
  port, storage in a temporary directory, optionally behind htpasswd basic auth (bcrypt
  hashes made here). `with Registry() as r:` starts it and waits until `/v2/` answers.
- `tar_of_files`, `tar_of_dir`: a layer (a reproducible tar: fixed times and owners, sorted).
- `write_layout`: an OCI image layout (index.json, blobs) from layers and a config, written
  here with tarfile and json (faster than umoci and with nothing to go wrong between runs).
- `push`: `skopeo copy oci:DIR:TAG docker://127.0.0.1:PORT/REPO:TAG` (optionally as Docker
  v2 schema 2, optionally with credentials); `push_index`: an image index (a multi-platform
  image) made of manifests already pushed, PUT through the registry API.
- `BearerProxy`: a stand-in for a token-authenticating registry (tests only): it answers
  401 with a `Bearer realm=...` challenge naming its own `/token`, hands out a token (for
  the right basic credentials, if it has some), and forwards requests bearing it.

It imports nothing of the tests' own and no pytest, so benchmarks can use it too.
`missing_tools()` names the programs it needs that are not installed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from tests.cluster._engines import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REGISTRY_BIN = "/usr/bin/docker-registry"
_FIXED_MTIME = 1_700_000_000


def missing_tools() -> list[str]:
    """The programs these helpers run that are not installed here."""
    missing = [] if os.access(REGISTRY_BIN, os.X_OK) else ["docker-registry"]
    return missing + [t for t in ("skopeo",) if shutil.which(t) is None]


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry the registry accepts (it takes bcrypt hashes only)."""
    import bcrypt

    # cost 4, the lowest: the registry checks the hash on every request
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}\n"


class Registry:
    """`docker-registry serve` of our own (see the module's doc). `auth` = (user, password)
    turns htpasswd basic auth on."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lamina-test-registry-"))
        self.storage = self.dir / "storage"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as an ImageUri names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Registry:
        self.storage.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.auth is not None:
            (self.dir / "htpasswd").write_text(htpasswd_line(*self.auth))
            auth = (
                f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {self.dir / 'htpasswd'}\n"
            )
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: lamina-test-secret\n" + auth
        )
        log = open(self.dir / "registry.log", "wb")  # noqa: SIM115 (the process keeps it)
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited at start: {self.log_text()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not answer in 20 s: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps blob `digest` (its filesystem driver's layout)."""
        hex_digest = digest.split(":", 1)[1]
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )

    def client(self) -> httpx.Client:
        auth = httpx.BasicAuth(*self.auth) if self.auth else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=10)


# -- layers and layouts -------------------------------------------------------------------


def _tar(add: Any) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def tar_of_files(files: Mapping[str, str | bytes], mode: int = 0o755) -> bytes:
    """A layer holding `files` (path -> content; parents made as directories). Paths ending
    in "/" are directories; content starting with "->" makes a symlink to the rest."""

    def add(tar: tarfile.TarFile) -> None:
        made: set[str] = set()
        for path in sorted(files):
            content = files[path]
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in made:
                    made.add(parent)
                    tar.addfile(_info(parent + "/", tarfile.DIRTYPE, 0o755))
            if path.endswith("/"):
                made.add(path.strip("/"))
                tar.addfile(_info(path, tarfile.DIRTYPE, 0o755))
            elif isinstance(content, str) and content.startswith("->"):
                info = _info(path, tarfile.SYMTYPE, 0o777)
                info.linkname = content[2:]
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info = _info(path, tarfile.REGTYPE, mode)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    return _tar(add)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = _FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def tar_of_dir(root: Path) -> bytes:
    """A layer holding the tree at `root` (sorted, times and owners fixed, links kept)."""

    def add(tar: tarfile.TarFile) -> None:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime = _FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)

    return _tar(add)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(layout: Path, data: bytes) -> str:
    digest = _digest(data)
    path = layout / "blobs/sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def write_layout(
    layout: Path,
    layers: Sequence[bytes],
    *,
    tag: str = "latest",
    architecture: str = "amd64",
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    working_dir: str = "",
    user: str = "",
    compress: bool = True,
) -> str:
    """Write (or add `tag` to) the OCI layout `layout` for an image of `layers` (uncompressed
    tars, bottom first; gzipped reproducibly if `compress`). Returns the manifest's digest,
    which `push` keeps."""
    (layout / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors = []
    for tar in layers:
        blob = gzip.compress(tar, mtime=0) if compress else tar
        descriptors.append(
            {
                "mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER,
                "digest": _put_blob(layout, blob),
                "size": len(blob),
            }
        )
    run: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        run["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        run["Cmd"] = list(cmd)
    if working_dir:
        run["WorkingDir"] = working_dir
    if user:
        run["User"] = user
    config = json.dumps(
        {
            "created": "2026-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": [_digest(t) for t in layers]},
            "history": [{"created_by": "lamina tests"} for _ in layers],
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": _put_blob(layout, config),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    digest = _put_blob(layout, manifest)
    index_path = layout / "index.json"
    index = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    ref_name = "org.opencontainers.image.ref.name"
    index["manifests"] = [
        m for m in index["manifests"] if m.get("annotations", {}).get(ref_name) != tag
    ] + [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(manifest),
            "annotations": {ref_name: tag},
        }
    ]
    index_path.write_text(json.dumps(index))
    return digest


def push(
    layout: Path,
    registry: Registry,
    repository: str,
    tag: str = "latest",
    *,
    source_tag: str = "latest",
    docker_format: bool = False,
    creds: tuple[str, str] | None = None,
) -> str:
    """`skopeo copy` the layout's `source_tag` to `registry`'s REPOSITORY:TAG (as Docker v2
    schema 2 if `docker_format`, which changes the digest). Returns the pushed manifest's
    digest (as the registry computes it)."""
    creds = creds if creds is not None else registry.auth
    args = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds is not None:
        args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    if docker_format:
        args += ["--format", "v2s2"]
    args += [f"oci:{layout}:{source_tag}", f"docker://{registry.host}/{repository}:{tag}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy failed: {done.stderr.strip()}")
    with registry.client() as http:
        answer = http.head(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"},
        )
        answer.raise_for_status()
        return answer.headers["docker-content-digest"]


def manifest_of(registry: Registry, repository: str, reference: str) -> dict[str, Any]:
    """The manifest at REPOSITORY:REFERENCE (an OCI or Docker v2 schema 2 one)."""
    with registry.client() as http:
        got = http.get(
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"},
        )
        got.raise_for_status()
        document: dict[str, Any] = got.json()
        return document


def push_index(
    registry: Registry, repository: str, tag: str, manifests: Sequence[tuple[str, str]]
) -> str:
    """Put an image index at REPOSITORY:TAG of (manifest digest, "os/arch") pairs already in
    the repository. Returns the index's digest."""
    entries = []
    with registry.client() as http:
        for digest, platform in manifests:
            got = http.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            got.raise_for_status()
            os_name, arch = platform.split("/", 1)
            entries.append(
                {
                    "mediaType": got.headers["content-type"],
                    "digest": digest,
                    "size": len(got.content),
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        put = http.put(
            f"/v2/{repository}/manifests/{tag}",
            content=body.encode(),
            headers={"Content-Type": OCI_INDEX},
        )
        put.raise_for_status()
        return _digest(body.encode())


# -- a bearer-token front ------------------------------------------------------------------

_REPO_IN_PATH = re.compile(r"^/v2/(.+)/(?:manifests|blobs|tags)/")


class BearerProxy:
    """Answers like a registry with token auth, in front of `registry` (see the module's doc).
    `credentials` = (user, password) the token endpoint demands; None hands tokens to anyone.
    `token_requests` counts the tokens given."""

    def __init__(self, registry: Registry, credentials: tuple[str, str] | None = None) -> None:
        self.registry = registry
        self.credentials = credentials
        self.token = secrets.token_hex(16)
        self.token_requests = 0
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_HEAD(self) -> None:
                proxy._handle(self, "HEAD")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> BearerProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _reply(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: Mapping[str, str] = {},
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        if path.startswith("/token"):
            if self.credentials is not None:
                expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode(
                    "ascii"
                )
                if handler.headers.get("Authorization") != expected:
                    self._reply(handler, 401, b'{"details": "bad credentials"}')
                    return
            self.token_requests += 1
            body = json.dumps({"token": self.token, "expires_in": 300}).encode()
            self._reply(handler, 200, body, {"Content-Type": "application/json"})
            return
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            challenge = f'Bearer realm="http://{self.host}/token",service="lamina-test"'
            match = _REPO_IN_PATH.match(path)
            if match:
                challenge += f',scope="repository:{match.group(1)}:pull"'
            body = b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}'
            self._reply(
                handler,
                401,
                body,
                {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
            )
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.registry.port, timeout=30)
        try:
            headers = {
                k: v
                for k, v in handler.headers.items()
                if k.lower() not in ("authorization", "host")
            }
            if self.registry.auth is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(
                    ":".join(self.registry.auth).encode()
                ).decode("ascii")
            upstream.request(method, path, headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
            passed = {
                k: v
                for k, v in answer.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            self._reply(handler, answer.status, body, passed)
        finally:
            upstream.close()
