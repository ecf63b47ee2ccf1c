"""Container-image functions (`PackageType: Image`): Lambda's rules for them, the resolution
of `Code.ImageUri` when a function is created or its code updated, and the background pull
that moves the function out of `Pending` (or its update out of `InProgress`).

Contract:
- `check_create` / `check_update_config` / `check_update_code` refuse what Lambda refuses,
  with its error types and wording, before anything is fetched.
- `ImageFunctions.resolve` reads the image's manifest and config at the call: a missing image
  is refused at once (InvalidParameterValueException, Lambda's words), a registry that refuses
  or cannot be reached is AccessDeniedException; nothing is written then.
- `ImageFunctions.pull` `ensure`s the image in the background, then settles the function
  through the `Settle` callback: `Pending` → `Active` or `Failed` (StateReasonCode from
  `ImageError.reason_code`); an update `InProgress` → `Successful`, or `Failed` with the
  previous image put back (it kept serving meanwhile, as on Lambda).
- `ImageFunctions.recover` pulls again, at server start, what a stop interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from lamina.control import validation as v
from lamina.errors import AccessDeniedError, InvalidParameterValueError
from lamina.images import (
    ImageAccessDenied,
    ImageError,
    ImageNotFound,
    InvalidImage,
    PullProgress,
    RegistryUnreachable,
    ResolvedImage,
    UnpackedImage,
)
from lamina.models import (
    LATEST,
    FunctionConfig,
    FunctionImage,
    FunctionState,
    ImageOverrides,
    UpdateStatus,
)

log = logging.getLogger(__name__)

IMAGE = "Image"

#: why a server on the process backend refuses image functions (the sandbox's own wording)
NEEDS_NAMESPACE = (
    "container-image functions need the namespace sandbox (lamina serve --sandbox namespace)"
)

_NO_RUNTIME = (
    "Please don't provide Handler or Runtime or Layer when the intended function PackageType "
    "is Image."
)
_NEED_URI = "Please provide ImageUri when the intended function PackageType is Image."
_NO_URI_FOR_ZIP = "Please don't provide ImageUri when the intended function PackageType is Zip."
_UPDATE_NEEDS_URI = "Please provide ImageUri when updating a function with packageType Image."
_UPDATE_NO_URI = "Please don't provide ImageUri when updating a function with packageType Zip."
_NO_IMAGE_CONFIG_FOR_ZIP = (
    "Please don't provide ImageConfig when the intended function PackageType is Zip."
)
#: ImageUri: Lambda's model takes any string; a URI past this is no image reference
IMAGE_URI_MAX_CHARS = 4096


class ImageSource(Protocol):
    """What the control plane needs of the node's image store (`lamina.images.store`)."""

    async def resolve(self, uri: str, architecture: str) -> ResolvedImage: ...

    async def ensure(self, image: ResolvedImage) -> UnpackedImage: ...

    def unpacked(self, digest: str) -> UnpackedImage | None: ...

    def progress(self) -> list[PullProgress]: ...


#: `settle(name, change)`: rewrite every stored version of function `name` that `change`
#: returns a new configuration for (None: leave that version as it is)
Settle = Callable[[str, Callable[[FunctionConfig], FunctionConfig | None]], Awaitable[None]]


# -- Lambda's rules -----------------------------------------------------------------------


def image_uri(c: v.Constraints, value: Any, where: str) -> str | None:
    """`Code.ImageUri` / UpdateFunctionCode's `ImageUri` (what it names: `resolve`)."""
    if isinstance(value, str) and not value:
        c.fail(value, where, "Member must have length greater than or equal to 1")
        return None
    return c.string(value, where, max_len=IMAGE_URI_MAX_CHARS)


def check_create(
    package_type: Any,
    uri: str | None,
    fields: dict[str, Any],
    layers: list[str] | None,
    other_code: bool = False,
) -> bool:
    """CreateFunction's rules about the package (after the model's constraints): True for an
    image function. An image function names no Runtime, Handler or Layers and has an
    ImageUri and no other code; a Zip function has no ImageUri and no ImageConfig."""
    if package_type != IMAGE:
        if uri is not None:
            raise InvalidParameterValueError(_NO_URI_FOR_ZIP)
        if "image_overrides" in fields:
            raise InvalidParameterValueError(_NO_IMAGE_CONFIG_FOR_ZIP)
        return False
    if "runtime" in fields or "handler" in fields or layers:
        raise InvalidParameterValueError(_NO_RUNTIME)
    if uri is None:
        raise InvalidParameterValueError(_NEED_URI)
    if other_code:
        raise InvalidParameterValueError(
            "Please don't provide ZipFile or S3 code when the intended function PackageType "
            "is Image."
        )
    return True


def check_update_config(current: FunctionConfig, changes: dict[str, Any], layers: Any) -> None:
    """UpdateFunctionConfiguration: an image function takes no Runtime, Handler or Layers;
    a Zip function takes no ImageConfig."""
    if current.image is not None:
        if "runtime" in changes or "handler" in changes or layers:
            raise InvalidParameterValueError(_NO_RUNTIME)
    elif "image_overrides" in changes:
        raise InvalidParameterValueError(_NO_IMAGE_CONFIG_FOR_ZIP)


def check_update_code(current: FunctionConfig, uri: str | None, other_code: bool) -> None:
    """UpdateFunctionCode: an image function's code is an ImageUri, a Zip function's never."""
    if current.image is not None and (uri is None or other_code):
        raise InvalidParameterValueError(_UPDATE_NEEDS_URI)
    if current.image is None and uri is not None:
        raise InvalidParameterValueError(_UPDATE_NO_URI)


def image_overrides(c: v.Constraints, value: Any) -> ImageOverrides | None:
    """`ImageConfig` as the model constrains it: EntryPoint and Command lists of at most 1500
    strings, WorkingDirectory at most 1000 characters."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "imageConfig", "Member must be a structure")
        return None
    lists: dict[str, tuple[str, ...] | None] = {}
    for key, where in (
        ("EntryPoint", "imageConfig.entryPoint"),
        ("Command", "imageConfig.command"),
    ):
        member = value.get(key)
        lists[key] = None
        if member is None:
            continue
        if not isinstance(member, list) or not all(isinstance(x, str) for x in member):
            c.fail(member, where, "Member must be a list of strings")
        elif len(member) > v.IMAGE_CONFIG_LIST_MAX:
            c.fail(
                "[" + ", ".join(member) + "]",
                where,
                f"Member must have length less than or equal to {v.IMAGE_CONFIG_LIST_MAX}",
            )
        else:
            lists[key] = tuple(member)
    workdir = c.string(
        value.get("WorkingDirectory"),
        "imageConfig.workingDirectory",
        max_len=v.WORKING_DIRECTORY_MAX_CHARS,
    )
    return ImageOverrides(lists["EntryPoint"], lists["Command"], workdir or None)


def function_image(resolved: ResolvedImage, overrides: ImageOverrides | None) -> FunctionImage:
    return FunctionImage(
        uri=resolved.ref.uri,
        resolved_uri=resolved.resolved_uri,
        digest=resolved.digest,
        config=resolved.config,
        overrides=overrides,
    )


def new_function(
    name: str,
    resolved: ResolvedImage,
    overrides: ImageOverrides | None,
    archs: tuple[str, ...],
    fields: dict[str, Any],
    now: datetime,
) -> FunctionConfig:
    """A created image function's `$LATEST`, Pending until its image is pulled: no runtime
    or handler, CodeSha256 the manifest digest's hex, CodeSize 0 (as Lambda reports them)."""
    return FunctionConfig(
        name=name,
        version=LATEST,
        runtime="",
        handler="",
        architectures=archs,
        package_type=IMAGE,
        code_sha256=resolved.code_sha256,
        code_size=0,
        revision_id=str(uuid.uuid4()),
        last_modified=now,
        state=FunctionState.PENDING,
        state_reason="The function is being created.",
        state_reason_code="Creating",
        image=function_image(resolved, overrides),
        **fields,
    )


def new_code(
    current: FunctionConfig, resolved: ResolvedImage, archs: tuple[str, ...], now: datetime
) -> FunctionConfig:
    """`current` with a new image (UpdateFunctionCode): its ImageConfig kept, and the image
    it ran kept as `previous_image`, which serves until the new one is pulled."""
    assert current.image is not None
    return replace(
        current,
        image=function_image(resolved, current.image.overrides),
        previous_image=current.image,
        code_sha256=resolved.code_sha256,
        architectures=archs,
        revision_id=str(uuid.uuid4()),
        last_modified=now,
    )


def _refusal(uri: str, e: Exception) -> Exception:
    """What CreateFunction/UpdateFunctionCode answers for an image it cannot resolve."""
    if isinstance(e, ImageNotFound):
        return InvalidParameterValueError(
            f"Source image {uri} does not exist. Provide a valid source image."
        )
    if isinstance(e, (ImageAccessDenied, RegistryUnreachable)):
        return AccessDeniedError(
            "Lambda does not have permission to access the ECR image. Check the ECR "
            f"permissions. ({e})"
        )
    if isinstance(e, InvalidImage):
        return InvalidParameterValueError(f"Source image {uri} is not valid: {e}")
    return InvalidParameterValueError(str(e))


# -- the background pull ------------------------------------------------------------------


def _settled(
    digest: str, error: ImageError | None, config: FunctionConfig
) -> FunctionConfig | None:
    """`config` once its image `digest` is on this node (`error` None) or could not be."""
    if config.image is None or config.image.digest != digest:
        return None
    if config.state is FunctionState.PENDING:
        if error is None:
            return replace(
                config, state=FunctionState.ACTIVE, state_reason=None, state_reason_code=None
            )
        return replace(
            config,
            state=FunctionState.FAILED,
            state_reason=str(error) or type(error).__name__,
            state_reason_code=error.reason_code,
        )
    if config.last_update_status is UpdateStatus.IN_PROGRESS:
        if error is None:
            return replace(
                config,
                last_update_status=UpdateStatus.SUCCESSFUL,
                last_update_status_reason=None,
                last_update_status_reason_code=None,
                previous_image=None,
            )
        # Lambda aborts a failed update: the previous code stays the function's.
        previous = config.previous_image or config.image
        return replace(
            config,
            image=replace(previous, overrides=config.image.overrides),
            code_sha256=previous.digest.split(":", 1)[1],
            previous_image=None,
            last_update_status=UpdateStatus.FAILED,
            last_update_status_reason=str(error) or type(error).__name__,
            last_update_status_reason_code=error.reason_code,
        )
    return None


class ImageFunctions:
    """The image store as the control plane uses it: resolve at the call, pull behind it."""

    def __init__(self, source: ImageSource | None, settle: Settle) -> None:
        self._source = source
        self._settle = settle
        self._tasks: set[asyncio.Task[None]] = set()
        #: why this server runs no image function (the process backend), None if it does
        self.refusal: str | None = None

    def check_allowed(self) -> ImageSource:
        if self.refusal is not None:
            raise InvalidParameterValueError(self.refusal)
        if self._source is None:
            raise InvalidParameterValueError("This Lamina server has no image store.")
        return self._source

    async def resolve(self, uri: str, architecture: str) -> ResolvedImage:
        """The image `uri` names, for `architecture` (see the module's contract)."""
        source = self.check_allowed()
        try:
            resolved = await source.resolve(uri, architecture)
        except (ImageError, ValueError) as e:
            raise _refusal(uri, e) from None
        if resolved.config.architecture != architecture:
            raise InvalidParameterValueError(
                f"The image {uri} is for {resolved.config.architecture}, not for the "
                f"function's Architectures [{architecture}]."
            )
        return resolved

    def pull(self, name: str, resolved: ResolvedImage | FunctionImage, architecture: str) -> None:
        """`ensure` the image in the background, then settle function `name`."""
        task = asyncio.get_running_loop().create_task(self._pull(name, resolved, architecture))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pull(
        self, name: str, image: ResolvedImage | FunctionImage, architecture: str
    ) -> None:
        digest = image.digest
        error: ImageError | None = None
        try:
            if self._source is None:
                raise ImageError("This Lamina server has no image store.")
            if isinstance(image, FunctionImage):  # after a restart: read its manifest again
                resolved = await self._source.resolve(image.resolved_uri, architecture)
            else:
                resolved = image
            await self._source.ensure(resolved)
        except ImageError as e:
            error = e
        except ValueError as e:
            error = InvalidImage(str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or the disk: the function says so rather than hang
            log.exception("pulling the image of %s failed", name)
            error = ImageError(f"Lamina could not pull the image: {e}")
        if error is not None:
            log.warning("function %s: image %s failed: %s", name, digest, error)
        try:
            await self._settle(name, partial(_settled, digest, error))
        except Exception:
            log.exception("could not record the image state of function %s", name)

    def recover(self, configs: Iterable[FunctionConfig]) -> None:
        """At start: pull again the images of functions left Pending or InProgress."""
        seen: set[tuple[str, str]] = set()
        for config in configs:
            image = config.image
            if image is None or (config.name, image.digest) in seen:
                continue
            if (
                config.state is FunctionState.PENDING
                or config.last_update_status is UpdateStatus.IN_PROGRESS
            ):
                seen.add((config.name, image.digest))
                self.pull(config.name, image, config.architectures[0])

    async def ensure(self, image: FunctionImage, architecture: str) -> UnpackedImage:
        """The image on this node, pulled first if it is not (a wiped cache, another node)."""
        source = self.check_allowed()
        found = source.unpacked(image.digest)
        if found is not None:
            return found
        return await source.ensure(await source.resolve(image.resolved_uri, architecture))

    def unpacked(self, digest: str) -> UnpackedImage | None:
        return self._source.unpacked(digest) if self._source is not None else None

    def progress(self) -> list[PullProgress]:
        """The node's pulls in flight and recent ones (for `lamina images`)."""
        return self._source.progress() if self._source is not None else []

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
