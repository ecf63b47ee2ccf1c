"""Container images for `PackageType: Image` functions, pulled from an OCI registry.

The contract between the parts (each module documents its own side):

- `reference`: `parse_image_uri(uri, registries)` reads Lambda's `ImageUri` (the ECR form
  `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG|@sha256:HEX`, or `HOST[:PORT]/REPO:TAG|@...`
  for the user's own registry) into an `ImageRef`, and says where its registry answers.
- `registry`: the OCI distribution API client (manifests, indexes, blobs; bearer-token and
  basic auth; digests verified).
- `store`: `ImageStore`, the node's content-addressed cache: blobs shared between images,
  each image digest unpacked once into a read-only root filesystem.

The control plane resolves an image when a function is created or its code updated (a
missing image is refused at once, as Lambda refuses it), then `ensure`s it in the background
(the function is `Pending` meanwhile). The scheduler asks `unpacked(digest)` for the root a
sandbox shows as `/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ImageError(Exception):
    """An image could not be resolved, pulled or unpacked. `reason_code` is Lambda's
    `StateReasonCode` / `LastUpdateStatusReasonCode` for it."""

    reason_code = "InvalidImage"


class ImageNotFound(ImageError):
    """The registry has no such repository, tag or digest (CreateFunction refuses it with
    "Source image ... does not exist. Provide a valid source image.")."""

    reason_code = "ImageDeleted"


class ImageAccessDenied(ImageError):
    """The registry refused the credentials Lamina has for it (401/403)."""

    reason_code = "ImageAccessDenied"


class RegistryUnreachable(ImageError):
    """The registry could not be reached (connection refused, timeout, TLS failure)."""

    reason_code = "ImageAccessDenied"


class InvalidImage(ImageError):
    """The image is not one Lamina can run: a bad manifest, a layer whose digest does not
    match, a path escaping the root, no image for the function's architecture."""

    reason_code = "InvalidImage"


@dataclass(frozen=True)
class ImageRef:
    """One `ImageUri`, read."""

    #: the URI as the user gave it (what GetFunction's `Code.ImageUri` reports)
    uri: str
    #: `host[:port]` as written in the URI
    host: str
    repository: str
    tag: str | None
    #: "sha256:<hex>" when the URI pins a digest
    digest: str | None
    #: where the registry answers: "http://127.0.0.1:5000", "https://registry.example"
    endpoint: str


@dataclass(frozen=True)
class ImageConfig:
    """What the image's config says about running it (OCI image config `config` member)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    #: the image's ENV, in order, as "NAME=value" split into a mapping
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    user: str = ""
    #: "x86_64" or "arm64", as Lambda names architectures
    architecture: str = "x86_64"


@dataclass(frozen=True)
class ResolvedImage:
    """An image's manifest and config, read from the registry (no layers fetched yet)."""

    ref: ImageRef
    #: the manifest's digest, "sha256:<hex>" (of the platform's manifest, not of an index)
    digest: str
    config: ImageConfig
    #: (digest, size in bytes) of each layer, bottom first
    layers: tuple[tuple[str, int], ...]

    @property
    def resolved_uri(self) -> str:
        """`ResolvedImageUri` as Lambda reports it: the repository pinned to the digest."""
        return f"{self.ref.host}/{self.ref.repository}@{self.digest}"

    @property
    def code_sha256(self) -> str:
        """CodeSha256 as Lambda reports it for an image: the manifest digest's hex."""
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class UnpackedImage:
    """An image ready to run: its read-only root filesystem on this node."""

    digest: str
    rootfs: Path
    config: ImageConfig


@dataclass
class PullProgress:
    """Where one pull stands (for the server log and `lamina images`)."""

    uri: str
    digest: str
    layers_total: int
    layers_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    #: "resolving", "pulling", "unpacking", "ready", "failed"
    phase: str = "resolving"
    error: str | None = None
