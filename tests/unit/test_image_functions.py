"""Container-image functions in the control plane: Lambda's rules and errors, the states a
function goes through while its image is pulled, what is stored, and what the API shows.

The image store here is a stand-in with `lamina.images.store.ImageStore`'s signatures (the
real one needs a registry; the integration tests run against one)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from lamina.api.wire import function_configuration
from lamina.control import FunctionService
from lamina.control.function_input import FunctionInput
from lamina.control.images import NEEDS_NAMESPACE
from lamina.errors import (
    AccessDeniedError,
    InvalidParameterValueError,
    ResourceConflictError,
    ValidationError,
)
from lamina.images import (
    ImageAccessDenied,
    ImageConfig,
    ImageNotFound,
    ImageRef,
    InvalidImage,
    PullProgress,
    ResolvedImage,
    UnpackedImage,
)
from lamina.models import LATEST, FunctionConfig, FunctionState, UpdateStatus
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.scheduler.lambda_env import DEFAULT_IMAGE_PATH, image_environment
from lamina.settings import Settings
from lamina.store import CodeStore, MetadataStore
from lamina.store.sealed import Sealer

ROLE = "arn:aws:iam::000000000000:role/lamina-function"
REGISTRY = "127.0.0.1:5000"
_MODEL = botocore.session.get_session().get_service_model("lambda")


def _digest(tag: str) -> str:
    return "sha256:" + (tag.encode().hex() * 64)[:64]


class FakeImages:
    """`ImageStore`'s signatures over a dict of images: `images[uri] = config`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, ImageConfig] = {}
        self.denied: set[str] = set()
        #: digests whose pull fails as a corrupt layer does
        self.broken: set[str] = set()
        #: pulls wait for this (set: they go through)
        self.gate = asyncio.Event()
        self.gate.set()
        self._unpacked: dict[str, UnpackedImage] = {}
        self.ensured: list[str] = []

    def add(self, repo_tag: str, **config: Any) -> str:
        uri = f"{REGISTRY}/{repo_tag}"
        self.images[uri] = ImageConfig(**config)
        return uri

    async def resolve(self, uri: str, architecture: str) -> ResolvedImage:
        if "//" in uri or " " in uri:
            raise ValueError(f"{uri!r} is not an image URI")
        if uri in self.denied:
            raise ImageAccessDenied(f"{REGISTRY} refused the credentials (401)")
        _, _, pin = uri.removeprefix(REGISTRY + "/").partition("@")
        if pin:  # a resolved URI: the image its digest names
            found = [u for u in self.images if _digest(u) == pin]
            if not found:
                raise ImageNotFound(f"no manifest {pin}")
            uri = found[0]
        if uri not in self.images:
            raise ImageNotFound(f"{uri}: manifest unknown")
        config = self.images[uri]
        name, _, tag = uri.removeprefix(REGISTRY + "/").partition(":")
        ref = ImageRef(uri, REGISTRY, name, tag or None, None, f"http://{REGISTRY}")
        return ResolvedImage(ref, _digest(uri), config, ())

    async def ensure(self, image: ResolvedImage) -> UnpackedImage:
        await self.gate.wait()
        self.ensured.append(image.digest)
        if image.digest in self.broken:
            raise InvalidImage(f"layer of {image.digest} does not match its digest")
        root = self.root / image.digest.split(":")[1]
        root.mkdir(parents=True, exist_ok=True)
        self._unpacked[image.digest] = UnpackedImage(image.digest, root, image.config)
        return self._unpacked[image.digest]

    def unpacked(self, digest: str) -> UnpackedImage | None:
        return self._unpacked.get(digest)

    def progress(self) -> list[PullProgress]:
        return []


def _service(tmp_path: Path, images: FakeImages) -> FunctionService:
    settings = Settings(data_dir=tmp_path, auth=False)
    runtime = RuntimeInfo("python3.12", sys.executable, tmp_path / "rt")
    metadata = MetadataStore.sqlite(settings.db_path, Sealer.open(settings.data_dir))
    functions = FunctionService(
        settings, metadata, CodeStore(settings.code_dir), RuntimeCatalog([runtime])
    )
    functions.images._source = images
    return functions


def run(tmp_path: Path, body: Callable[[FunctionService, FakeImages], Awaitable[None]]) -> None:
    async def main() -> None:
        images = FakeImages(tmp_path / "images")
        functions = _service(tmp_path, images)
        await functions.load()
        try:
            await body(functions, images)
        finally:
            await functions.images.close()
            functions.close()

    asyncio.run(main())


def _image(name: str, uri: str | None, **more: Any) -> FunctionInput:
    return FunctionInput(name=name, role=ROLE, package_type="Image", image_uri=uri, **more)


async def _settled(functions: FunctionService, name: str) -> FunctionConfig:
    for _ in range(200):
        config = functions.latest(name)
        assert config is not None
        if (
            config.state is not FunctionState.PENDING
            and config.last_update_status is not UpdateStatus.IN_PROGRESS
        ):
            return config
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never settled")


def _wire(config: FunctionConfig) -> dict[str, Any]:
    out = function_configuration(
        config, f"arn:aws:lambda:us-east-1:000000000000:function:{config.name}"
    )
    unknown = set(out) - set(_MODEL.shape_for("FunctionConfiguration").members)
    assert not unknown
    return out


def test_create_is_pending_until_the_image_is_pulled_then_active(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("hello:1", entrypoint=("/lambda-entrypoint.sh",), cmd=("app.handler",))
        images.gate.clear()
        config = await functions.create(_image("hello", uri))
        assert config.state is FunctionState.PENDING
        assert config.state_reason_code == "Creating"
        assert config.code_sha256 == _digest(uri).split(":")[1] and config.code_size == 0
        await asyncio.sleep(0.05)
        assert functions.latest("hello").state is FunctionState.PENDING  # type: ignore[union-attr]
        with pytest.raises(ResourceConflictError, match="following state: Pending"):
            await functions.update_config(functions.ref("hello"), FunctionInput(timeout=9))
        images.gate.set()
        active = await _settled(functions, "hello")
        assert active.state is FunctionState.ACTIVE and active.state_reason is None
        assert images.ensured == [_digest(uri)]
        wire = _wire(active)
        assert "Runtime" not in wire and "Handler" not in wire
        assert wire["PackageType"] == "Image"
        assert wire["CodeSha256"] == _digest(uri).split(":")[1]  # hex, not base64
        assert wire["CodeSize"] == 0
        assert "ImageConfigResponse" not in wire  # only when ImageConfig was given

    run(tmp_path, body)


def test_image_config_is_kept_reported_and_overrides_the_image(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add(
            "hello:1", entrypoint=("/entry",), cmd=("a.h",), working_dir="/srv", env={"A": "1"}
        )
        given = {"Command": ["b.h"], "WorkingDirectory": "/work"}
        await functions.create(_image("hello", uri, image_config=given))
        config = await _settled(functions, "hello")
        assert config.image is not None
        assert config.image.argv == ("/entry", "b.h")
        assert config.image.working_dir == "/work"
        assert _wire(config)["ImageConfigResponse"] == {"ImageConfig": given}
        changed = await functions.update_config(
            functions.ref("hello"), FunctionInput(image_config={"EntryPoint": ["/other", "-x"]})
        )
        assert changed.image is not None and changed.image.argv == ("/other", "-x", "a.h")
        assert changed.image.working_dir == "/srv"

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"runtime": "python3.12"}, InvalidParameterValueError, "Handler or Runtime or Layer"),
        ({"handler": "app.handler"}, InvalidParameterValueError, "Handler or Runtime or Layer"),
        (
            {"layers": ["arn:aws:lambda:us-east-1:000000000000:layer:l:1"]},
            InvalidParameterValueError,
            "Handler or Runtime or Layer",
        ),
        (
            {"image_config": {"EntryPoint": ["x"] * 1501}},
            ValidationError,
            "imageConfig.entryPoint' failed to satisfy constraint: Member must have length "
            "less than or equal to 1500",
        ),
        (
            {"image_config": {"WorkingDirectory": "/" * 1001}},
            ValidationError,
            "Member must have length less than or equal to 1000",
        ),
    ],
)
def test_lambda_s_rules_for_image_functions(
    tmp_path: Path, given: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("hello:1", cmd=("x",))
        with pytest.raises(error) as raised:
            await functions.create(_image("hello", uri, **given))
        assert message in str(raised.value)
        assert functions.latest("hello") is None

    run(tmp_path, body)


def test_the_package_type_and_the_code_must_agree(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("hello:1", cmd=("x",))
        with pytest.raises(InvalidParameterValueError, match="provide ImageUri when the intended"):
            await functions.create(_image("a", None))
        zip_with_uri = FunctionInput(
            name="b", role=ROLE, runtime="python3.12", handler="app.h", image_uri=uri
        )
        with pytest.raises(InvalidParameterValueError, match="PackageType is Zip"):
            await functions.create(zip_with_uri)
        await functions.create(_image("img", uri))
        await _settled(functions, "img")
        with pytest.raises(
            InvalidParameterValueError, match="provide ImageUri when updating a function with "
        ):
            await functions.update_code(functions.ref("img"), b"PK\x05\x06" + bytes(18), None)

    run(tmp_path, body)


def test_an_image_that_cannot_be_read_is_refused_at_once_and_nothing_is_kept(
    tmp_path: Path,
) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        missing = f"{REGISTRY}/nothing:here"
        with pytest.raises(InvalidParameterValueError) as raised:
            await functions.create(_image("a", missing))
        assert str(raised.value) == (
            f"Source image {missing} does not exist. Provide a valid source image."
        )
        denied = images.add("secret:1", cmd=("x",))
        images.denied.add(denied)
        with pytest.raises(AccessDeniedError, match="does not have permission to access"):
            await functions.create(_image("b", denied))
        with pytest.raises(InvalidParameterValueError, match="not an image URI"):
            await functions.create(_image("c", "http://x//y"))
        assert functions.all_configs() == []

    run(tmp_path, body)


def test_a_pull_that_fails_leaves_the_function_failed_with_lambda_s_reason(
    tmp_path: Path,
) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("corrupt:1", cmd=("x",))
        images.broken.add(_digest(uri))
        await functions.create(_image("bad", uri))
        config = await _settled(functions, "bad")
        assert config.state is FunctionState.FAILED
        assert config.state_reason_code == "InvalidImage"
        assert config.state_reason and "does not match its digest" in config.state_reason
        wire = _wire(config)
        assert (wire["State"], wire["StateReasonCode"]) == ("Failed", "InvalidImage")

    run(tmp_path, body)


def test_an_update_is_in_progress_while_the_old_image_serves(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        old = images.add("app:1", cmd=("one",))
        new = images.add("app:2", cmd=("two",))
        await functions.create(_image("app", old, image_config={"WorkingDirectory": "/w"}))
        await _settled(functions, "app")
        images.gate.clear()
        accepted = await functions.update_code(functions.ref("app"), None, None, image_uri=new)
        assert accepted.last_update_status is UpdateStatus.IN_PROGRESS
        held = functions.latest("app")
        assert held is not None and held.image is not None and held.serving_image is not None
        assert held.image.uri == new and held.serving_image.uri == old
        assert held.image.overrides is not None  # ImageConfig goes with the function
        with pytest.raises(ResourceConflictError, match="An update is in progress"):
            await functions.update_code(functions.ref("app"), None, None, image_uri=old)
        images.gate.set()
        done = await _settled(functions, "app")
        assert done.last_update_status is UpdateStatus.SUCCESSFUL
        assert done.serving_image == done.image and done.image is not None
        assert done.image.uri == new and done.code_sha256 == _digest(new).split(":")[1]

        # A new image whose pull fails: the update fails and the previous image stays.
        broken = images.add("app:3", cmd=("three",))
        images.broken.add(_digest(broken))
        await functions.update_code(functions.ref("app"), None, None, image_uri=broken)
        failed = await _settled(functions, "app")
        assert failed.last_update_status is UpdateStatus.FAILED
        assert failed.last_update_status_reason_code == "InvalidImage"
        assert failed.image is not None and failed.image.uri == new
        assert failed.code_sha256 == _digest(new).split(":")[1]
        assert failed.state is FunctionState.ACTIVE

    run(tmp_path, body)


def test_a_zip_function_takes_no_image(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("app:1", cmd=("x",))
        from tests.conftest import make_zip

        package = make_zip({"app.py": "def h(e, c):\n    return 1\n"})
        zipped = FunctionInput(
            name="z", role=ROLE, runtime="python3.12", handler="app.h", zip_file=package
        )
        await functions.create(zipped)
        with pytest.raises(InvalidParameterValueError, match="packageType Zip"):
            await functions.update_code(functions.ref("z"), None, None, image_uri=uri)
        with pytest.raises(InvalidParameterValueError, match="ImageConfig"):
            await functions.update_config(
                functions.ref("z"), FunctionInput(image_config={"Command": ["x"]})
            )

    run(tmp_path, body)


def test_a_server_that_cannot_run_images_refuses_them(tmp_path: Path) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        functions.images.refusal = NEEDS_NAMESPACE
        uri = images.add("app:1", cmd=("x",))
        with pytest.raises(InvalidParameterValueError, match="need the namespace sandbox"):
            await functions.create(_image("app", uri))

    run(tmp_path, body)


def test_publishing_at_creation_makes_a_pending_version_that_becomes_active(
    tmp_path: Path,
) -> None:
    async def body(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("app:1", cmd=("x",))
        images.gate.clear()
        await functions.create(_image("app", uri))
        with pytest.raises(ResourceConflictError, match="Pending"):
            await functions.publish(functions.ref("app"))
        version = await functions.publish(functions.ref("app"), creating=True)
        assert version.state is FunctionState.PENDING and version.image is not None
        images.gate.set()
        await _settled(functions, "app")
        for _ in range(100):
            published = functions.version("app", version.version)
            if published is not None and published.state is FunctionState.ACTIVE:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the version stayed Pending")

    run(tmp_path, body)


def test_a_pull_cut_short_by_a_stop_is_done_at_the_next_start(tmp_path: Path) -> None:
    async def first(functions: FunctionService, images: FakeImages) -> None:
        uri = images.add("app:1", cmd=("x",))
        images.gate.clear()
        await functions.create(_image("app", uri))

    run(tmp_path, first)  # stops with the pull waiting: the function stays Pending

    async def second(functions: FunctionService, images: FakeImages) -> None:
        images.add("app:1", cmd=("x",))
        held = functions.latest("app")
        assert held is not None and held.state is FunctionState.PENDING
        assert held.image is not None and held.image.config.cmd == ("x",)
        functions.images.recover(functions.all_configs())
        config = await _settled(functions, "app")
        assert config.state is FunctionState.ACTIVE
        assert functions.version("app", LATEST) == config

    run(tmp_path, second)


def test_an_image_function_s_environment() -> None:
    from lamina.models import FunctionImage, ImageOverrides

    image = FunctionImage(
        uri="r/app:1",
        resolved_uri="r/app@sha256:" + "0" * 64,
        digest="sha256:" + "0" * 64,
        config=ImageConfig(env={"LANG": "C.UTF-8", "LAMBDA_TASK_ROOT": "/var/task"}),
        overrides=ImageOverrides(command=("app.handler",)),
    )
    config = FunctionConfig(
        name="app",
        version=LATEST,
        runtime="",
        handler="",
        role=ROLE,
        code_sha256="0" * 64,
        code_size=0,
        revision_id="r",
        last_modified=__import__("datetime").datetime.now(),
        package_type="Image",
        image=image,
    )
    env = image_environment(config, Settings(), image)
    assert env["LANG"] == "C.UTF-8" and env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["PATH"] == DEFAULT_IMAGE_PATH
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "app"
    assert "AWS_EXECUTION_ENV" not in env and "_HANDLER" not in env
