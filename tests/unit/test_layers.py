"""Layers without a server: the rules for a function's Layers, version numbering in the store,
merging layers into /opt, and the scheduler handing /opt to the environment."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lamina.control import validation as v
from lamina.control.layers import LayerMerges, LayerService, opt_key
from lamina.errors import InvalidParameterValueError, ValidationError
from lamina.models import FunctionConfig, FunctionLayer, LayerVersion
from lamina.observability import Metrics
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.scheduler import Scheduler
from lamina.settings import Settings
from lamina.store import CodeStore, MetadataStore, UnsafePackageError

ARN = "arn:aws:lambda:us-east-1:000000000000:layer:"


def zipped(files: dict[str, str], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            zf.writestr(info, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def layer_version(name: str, sha: str = "ab" * 32) -> LayerVersion:
    return LayerVersion(
        name=name, version=0, code_sha256=sha, code_size=10, created=datetime.now(UTC)
    )


def config(layers: tuple[FunctionLayer, ...] = ()) -> FunctionConfig:
    return FunctionConfig(
        name="fn",
        version="$LATEST",
        runtime="python3.11",
        handler="h.ok",
        role="arn:aws:iam::000000000000:role/x",
        code_sha256="cd" * 32,
        code_size=1,
        revision_id="r1",
        last_modified=datetime.now(UTC),
        layers=layers,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    metadata = MetadataStore.sqlite(tmp_path / "db.sqlite")
    yield metadata
    metadata.close()


class _Keeper:
    """LayerService.resolve is blocking and needs no keeper; the others are not used here."""

    async def run(self, fn: object, *args: object) -> object:
        raise AssertionError("not used")

    def storing_code(self, data: bytes, operation: str) -> object:
        raise AssertionError("not used")

    async def release_code(self, sha256: str) -> None:
        raise AssertionError("not used")


@pytest.fixture
def service(tmp_path: Path, store: MetadataStore) -> LayerService:
    settings = Settings(data_dir=tmp_path)
    return LayerService(settings, store, CodeStore(tmp_path / "code"), _Keeper())  # type: ignore[arg-type]


# -- the store -------------------------------------------------------------------


def test_version_numbers_count_up_and_are_never_reused(store: MetadataStore) -> None:
    assert store.publish_layer_version(layer_version("a")).version == 1
    assert store.publish_layer_version(layer_version("a")).version == 2
    assert store.publish_layer_version(layer_version("b")).version == 1
    assert store.delete_layer_version("a", 2) is not None
    assert store.delete_layer_version("a", 2) is None
    assert store.delete_layer_version("a", 1) is not None
    assert store.layer_versions("a") == []
    assert store.publish_layer_version(layer_version("a")).version == 3


def test_layer_version_round_trip(store: MetadataStore) -> None:
    draft = replace(
        layer_version("a"),
        description="d",
        compatible_runtimes=("python3.11",),
        compatible_architectures=("arm64",),
        license_info="MIT",
    )
    published = store.publish_layer_version(draft)
    assert store.get_layer_version("a", 1) == published
    assert store.get_layer_version("a", 2) is None
    store.publish_layer_version(layer_version("a"))
    assert [lv.version for lv in store.layer_versions("a")] == [2, 1]
    store.publish_layer_version(layer_version("0-first"))
    assert [(lv.name, lv.version) for lv in store.all_layer_versions()] == [
        ("0-first", 1),
        ("a", 2),
        ("a", 1),
    ]
    assert [lv.name for lv in store.all_layer_versions(after="0-first")] == ["a", "a"]


def test_function_layers_are_stored_with_the_function(store: MetadataStore) -> None:
    layer = FunctionLayer(arn=ARN + "a:1", code_sha256="ef" * 32, code_size=5)
    cfg = config((layer,))
    assert store.create_function(cfg, {})
    assert store.all_versions()[0].layers == (layer,)
    assert store.list_latest(None, 10)[0].layers == (layer,)
    fn = store.get_function("fn")
    assert fn is not None and fn.latest.layers == (layer,)
    assert store.code_in_use("ef" * 32), "a function's layer keeps its code"
    assert "ef" * 32 in store.referenced_code()
    other = FunctionLayer(arn=ARN + "b:1", code_sha256="01" * 32, code_size=6)
    assert store.replace_version(replace(cfg, layers=(other, layer)), expect_revision="r1")
    assert store.all_versions()[0].layers == (other, layer)
    assert not store.code_in_use("12" * 32)
    store.delete_function("fn")
    assert not store.code_in_use("ef" * 32)


def test_layer_versions_keep_their_code(store: MetadataStore) -> None:
    store.publish_layer_version(layer_version("a", sha="77" * 32))
    assert store.code_in_use("77" * 32)
    assert store.layer_code_exists("77" * 32)
    store.delete_layer_version("a", 1)
    assert not store.code_in_use("77" * 32)
    assert not store.layer_code_exists("77" * 32)


# -- what a function may take ----------------------------------------------------


def test_layer_arns_syntax() -> None:
    c = v.Constraints()
    assert v.layer_arns(c, [ARN + "a:1"]) == [ARN + "a:1"]
    assert v.layer_arns(c, []) == []
    assert v.layer_arns(c, None) is None
    c.check()
    for bad in (["nope"], [ARN + "a"], "not-a-list", [1]):
        c = v.Constraints()
        assert v.layer_arns(c, bad) is None
        with pytest.raises(ValidationError, match="'layers'"):
            c.check()


def test_resolve_follows_lambdas_rules(service: LayerService, store: MetadataStore) -> None:
    a1 = store.publish_layer_version(layer_version("a", sha="a1" * 32))
    store.publish_layer_version(layer_version("a", sha="a2" * 32))
    store.publish_layer_version(layer_version("b", sha="b1" * 32))
    got = service.resolve([ARN + "b:1", ARN + "a:1"])
    assert got == (
        FunctionLayer(arn=ARN + "b:1", code_sha256="b1" * 32, code_size=10),
        FunctionLayer(arn=ARN + "a:1", code_sha256=a1.code_sha256, code_size=10),
    )
    # A version number with a leading zero names the same version.
    assert service.resolve([ARN + "a:01"])[0].arn == ARN + "a:1"

    def refused(arns: list[str], message: str) -> None:
        with pytest.raises(InvalidParameterValueError, match=message):
            service.resolve(arns)

    refused([ARN + "a:3"], f"Layer version {ARN}a:3 does not exist.")
    refused(["arn:aws:lambda:us-east-1:111111111111:layer:a:1"], "does not exist")
    refused(["arn:aws:lambda:eu-west-1:000000000000:layer:a:1"], "region us-east-1")
    refused(["arn:aws:lambda:::awslayer:AWSLambda-Python-AWS-SDK"], "does not exist")
    refused([ARN + "a:1", ARN + "a:2"], f"{ARN}a:1 and {ARN}a:2 are versions of the same")
    refused([ARN + "b:1"] * 2, "same layer")
    refused([ARN + "b:1"] * 6, "Cannot reference more than 5 layers.")


def test_resolve_keeps_deleted_versions_the_function_has(
    service: LayerService, store: MetadataStore
) -> None:
    store.publish_layer_version(layer_version("a", sha="a1" * 32))
    held = service.resolve([ARN + "a:1"])
    store.delete_layer_version("a", 1)
    assert service.resolve([ARN + "a:1"], held) == held
    with pytest.raises(InvalidParameterValueError, match="does not exist"):
        service.resolve([ARN + "a:1"])


# -- merging into /opt -----------------------------------------------------------


def put(code: CodeStore, files: dict[str, str], links: dict[str, str] | None = None) -> str:
    return code.put(zipped(files, links)).sha256


def ref(sha: str) -> FunctionLayer:
    return FunctionLayer(arn=ARN + f"x{sha[:6]}:1", code_sha256=sha, code_size=1)


@pytest.fixture
def code(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


@pytest.fixture
def merges(tmp_path: Path, code: CodeStore) -> LayerMerges:
    return LayerMerges(tmp_path / "opt", code)


def test_later_layers_overwrite_earlier_ones(
    merges: LayerMerges, code: CodeStore, tmp_path: Path
) -> None:
    first = put(
        code,
        {
            "python/shared.py": "first",
            "python/only_first.py": "1",
            "becomes_dir": "file",
            "becomes_file/inner": "x",
        },
        {"link": "python"},
    )
    second = put(
        code,
        {"python/shared.py": "second", "becomes_dir/inner": "y", "becomes_file": "f"},
        {"python/alias.py": "shared.py"},
    )
    layers = (ref(first), ref(second))
    opt = merges.build(layers)
    assert opt == tmp_path / "opt" / str(opt_key(layers))
    assert (opt / "python" / "shared.py").read_text() == "second"
    assert (opt / "python" / "only_first.py").read_text() == "1"
    assert (opt / "becomes_dir" / "inner").read_text() == "y"
    assert (opt / "becomes_file").read_text() == "f"
    assert os.readlink(opt / "link") == "python"
    assert (opt / "python" / "alias.py").read_text() == "second"
    # Hard links: the merged tree costs no copy of the layers' files.
    source = code.task_dir(second) / "python" / "shared.py"
    assert (opt / "python" / "shared.py").stat().st_ino == source.stat().st_ino
    assert not list((tmp_path / "opt" / "tmp").iterdir())
    assert merges.build(layers) == opt, "built once"


def test_a_later_directory_replaces_an_earlier_symlink(
    merges: LayerMerges, code: CodeStore
) -> None:
    """Writing the second layer's files through the first layer's link would put them
    somewhere else; the directory replaces the link instead."""
    first = put(code, {"real/keep": "k"}, {"lib": "real"})
    second = put(code, {"lib/new": "n"})
    opt = merges.build((ref(first), ref(second)))
    assert not (opt / "lib").is_symlink()
    assert (opt / "lib" / "new").read_text() == "n"
    assert not (opt / "real" / "new").exists()


def test_links_leaving_opt_once_merged_are_refused(
    merges: LayerMerges, code: CodeStore, tmp_path: Path
) -> None:
    # Each layer is safe alone; together `b` resolves to ../etc.
    first = put(code, {"x": "x"}, {"a": "."})
    second = put(code, {"y": "y"}, {"b": "a/../etc"})
    with pytest.raises(UnsafePackageError, match="'b'"):
        merges.build((ref(first), ref(second)))
    assert merges.present() == set()
    assert not list((tmp_path / "opt" / "tmp").iterdir())


def test_missing_layer_code_fails_the_build(merges: LayerMerges) -> None:
    with pytest.raises(FileNotFoundError):
        merges.build((ref("99" * 32),))
    assert merges.present() == set()


def test_keys_and_sweep(merges: LayerMerges, code: CodeStore, tmp_path: Path) -> None:
    a = ref(put(code, {"a": "a"}))
    b = ref(put(code, {"b": "b"}))
    assert opt_key(()) is None
    assert merges.path(()) == tmp_path / "opt" / "empty"
    assert (tmp_path / "opt" / "empty").is_dir()
    assert opt_key((a, b)) != opt_key((b, a)), "order matters"
    assert opt_key((a,)) == opt_key((replace(a, arn=ARN + "other:3"),)), "content decides"
    merges.build((a, b))
    merges.build((b, a))
    kept = str(opt_key((a, b)))
    assert merges.sweep({kept}) == {str(opt_key((b, a)))}
    assert merges.present() == {kept}
    assert (tmp_path / "opt" / "empty").is_dir(), "never swept"


def test_leftovers_of_a_crashed_build_are_removed(tmp_path: Path, code: CodeStore) -> None:
    (tmp_path / "opt" / "tmp" / "half-built" / "python").mkdir(parents=True)
    LayerMerges(tmp_path / "opt", code)
    assert not list((tmp_path / "opt" / "tmp").iterdir())


# -- the scheduler ----------------------------------------------------------------


def test_the_scheduler_gives_the_environment_its_merged_opt(tmp_path: Path) -> None:
    layered = config((ref("ef" * 32),))
    seen: list[FunctionConfig] = []

    def opt_dir(cfg: FunctionConfig) -> Path:
        seen.append(cfg)
        return tmp_path / "opt" / "merged"

    async def main() -> None:
        runtime = RuntimeInfo(
            "python3.11", "/nonexistent/python3.11", tmp_path / "runtime", version="3.11"
        )
        sched = Scheduler(
            Settings(data_dir=tmp_path),
            FakeBackend({}),
            RuntimeCatalog([runtime]),
            Metrics(),
            task_root=lambda sha: tmp_path / "task",
            opt_dir=opt_dir,
        )
        env = sched._context(layered).base_env
        opt = str(tmp_path / "opt" / "merged")
        assert env["PYTHONPATH"].split(":")[:2] == [
            f"{opt}/python/lib/python3.11/site-packages",
            f"{opt}/python",
        ]
        assert f"{opt}/bin" in env["PATH"].split(":")
        assert env["LD_LIBRARY_PATH"].endswith(f"{opt}/lib")
        await sched.close()

    asyncio.run(main())
    assert seen == [layered]
