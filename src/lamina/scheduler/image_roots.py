"""Container-image functions on this node: their unpacked root filesystems, and the pull
that brings an image here before its first environment starts.

`ImageRoots` is what the scheduler needs of the control plane's image functions
(`control.images.ImageFunctions` keeps it): `unpacked` is cheap and never touches the network;
`ensure` pulls and unpacks. Both failure paths are the invoker's errors, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lamina.errors import InvalidRuntimeError, LaminaError, ResourceNotReadyError
from lamina.images import ImageError, UnpackedImage
from lamina.models import FunctionConfig, FunctionImage


class ImageRoots(Protocol):
    """Where container-image functions' root filesystems come from (`control.images`)."""

    def unpacked(self, digest: str) -> UnpackedImage | None: ...

    async def ensure(self, image: FunctionImage, architecture: str) -> UnpackedImage: ...


async def ensure_here(roots: ImageRoots | None, config: FunctionConfig) -> None:
    """Before an image function's environment starts: its image unpacked on this node,
    pulled first if it is not (a cache wiped since, or another node's pull)."""
    image = config.serving_image
    assert image is not None
    if roots is not None and roots.unpacked(image.digest) is not None:
        return
    if roots is None:
        raise ResourceNotReadyError("This Lamina server runs no container-image functions.")
    try:
        await roots.ensure(image, config.architectures[0])
    except (ImageError, ValueError, LaminaError) as e:
        raise ResourceNotReadyError(
            f"The function's image {image.uri} is not on this node and could not be pulled: {e}"
        ) from None


def root_of(roots: ImageRoots | None, image: FunctionImage) -> Path:
    """The image's root on this node, for a pool of its environments: ResourceNotReadyError
    if it is not unpacked here, InvalidRuntimeError if the image gives nothing to run."""
    unpacked = roots.unpacked(image.digest) if roots is not None else None
    if unpacked is None:
        raise ResourceNotReadyError(f"The function's image {image.uri} is not on this node yet.")
    if not image.argv:
        raise InvalidRuntimeError(
            f"The image {image.uri} has no ENTRYPOINT or CMD, and the function's ImageConfig "
            "sets no EntryPoint or Command: there is nothing to run."
        )
    return unpacked.rootfs
