"""The tag service by ARN, with a holder of another resource kind (as code signing configs
and event source mappings plug in)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lamina.control.tags import TagService
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError, ValidationError

CSC = "arn:aws:lambda:us-east-1:000000000000:code-signing-config:csc-0123456789abcdefg"


class Holder:
    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {"csc-0123456789abcdefg": {}}
        self.writes = 0

    async def read(self, resource_id: str) -> dict[str, str] | None:
        found = self.tags.get(resource_id)
        return dict(found) if found is not None else None

    async def write(self, resource_id: str, tags: dict[str, str]) -> bool:
        self.writes += 1
        if resource_id not in self.tags:
            return False
        self.tags[resource_id] = dict(tags)
        return True


def service() -> tuple[TagService, Holder]:
    tags = TagService("us-east-1", "000000000000")
    holder = Holder()
    tags.register("code-signing-config", holder)
    return tags, holder


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_registered_kind() -> None:
    tags, holder = service()
    run(tags.tag(CSC, {"a": "1", "b": "2"}))
    assert run(tags.list(CSC)) == {"a": "1", "b": "2"}
    run(tags.untag(CSC, ["a", "zzz"]))
    assert holder.tags["csc-0123456789abcdefg"] == {"b": "2"}
    writes = holder.writes
    run(tags.untag(CSC, ["zzz"]))
    assert holder.writes == writes  # nothing to remove: nothing written


def test_what_is_not_here() -> None:
    tags, _ = service()
    for arn in (
        CSC.replace("0123", "9999"),  # no such config
        CSC.replace("000000000000", "111111111111"),  # another account
        CSC.replace("us-east-1", "eu-west-1"),
        "arn:aws:lambda:us-east-1:000000000000:capacity-provider:p",  # no holder registered
    ):
        with pytest.raises(ResourceNotFoundError):
            run(tags.list(arn))


def test_a_resource_deleted_while_tagging() -> None:
    tags, holder = service()

    async def read_then_gone(resource_id: str) -> dict[str, str] | None:
        found = holder.tags.pop(resource_id, None)
        return found

    holder.read = read_then_gone  # type: ignore[method-assign]
    with pytest.raises(ResourceNotFoundError):
        run(tags.tag(CSC, {"a": "1"}))


@pytest.mark.parametrize(
    ("arn", "value", "error"),
    [
        (
            "arn:aws:lambda:us-east-1:000000000000:code-signing-config:bad",
            {"a": "1"},
            ValidationError,
        ),
        (CSC, None, ValidationError),
        (CSC, {"a" * 129: "1"}, ValidationError),
        (CSC, {"a": "v" * 257}, ValidationError),
        (CSC, {"a\t": "1"}, ValidationError),
        (CSC, {"Aws:x": "1"}, InvalidParameterValueError),
        (CSC, {f"k{i}": "" for i in range(51)}, InvalidParameterValueError),
    ],
)
def test_refused(arn: str, value: Any, error: type[Exception]) -> None:
    tags, holder = service()
    with pytest.raises(error):
        run(tags.tag(arn, value))
    assert holder.writes == 0


def test_limits_hold_at_the_edge() -> None:
    tags, _ = service()
    run(tags.tag(CSC, {f"k{i}": "" for i in range(50)}))
    run(tags.tag(CSC, {"k0": "x" * 256, "k1": "ü"}))  # replaced: still 50
    assert len(run(tags.list(CSC))) == 50
    tags, _ = service()
    run(tags.tag(CSC, {"ä \u0661:/=+-@._": "ü"}))  # any letter, number or space
    assert run(tags.list(CSC)) == {"ä \u0661:/=+-@._": "ü"}
