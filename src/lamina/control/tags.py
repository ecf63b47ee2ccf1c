"""Tags of Lambda resources (TagResource, UntagResource, ListTags), by resource ARN, with
Lambda's limits.

Tags are addressed by ARN, and each kind of taggable resource (`function`, and the kinds other
services add: `code-signing-config`, `event-source-mapping`, `capacity-provider`) keeps its
tags where it keeps the resource, so that they are deleted with it in the same transaction.
A kind plugs in with a `TagHolder`; `TagService` owns the ARN parsing, the checks and the
errors, which are the same for every kind.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from lamina import limits
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError
from lamina.models import LATEST
from lamina.store.metadata import MetadataStore

T = TypeVar("T")


class Runner(Protocol):
    """Runs a blocking store call on the control worker."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


# botocore's TaggableResource pattern, in parts: the resource kind and id after the account.
_TAGGABLE = re.compile(
    r"arn:(aws[a-zA-Z-]*):lambda:(?P<region>(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+"
    r"-\d{1}):(?P<account>\d{12}):(?P<kind>function|code-signing-config|event-source-mapping"
    r"|capacity-provider|network-connector):(?P<id>.+)"
)
_TAGGABLE_ID = {
    "function": re.compile(r"[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?"),
    "code-signing-config": re.compile(r"csc-[a-z0-9]{17}"),
    "event-source-mapping": re.compile(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    ),
    "capacity-provider": re.compile(r"[a-zA-Z0-9-_]{1,64}"),
    "network-connector": re.compile(r"[a-zA-Z0-9-_]{1,64}"),
}
_TAGGABLE_TEXT = (
    r"arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}"
    r"|event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
    r"-[0-9a-fA-F]{12}|(capacity-provider|network-connector):[a-zA-Z0-9-_]{1,64})"
)
# botocore's TagKey and TagValue pattern, which `re` spells without Unicode classes: letters
# and numbers (and `_`) are word characters; \p{Z} is the Unicode space separators.
_TAG_TEXT = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*"
_TAG_CHARS = re.compile(
    r"(?:\w|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]|[.:/=+\-@])*"
)
_RESERVED_PREFIX = "aws:"


class TagHolder(Protocol):
    """Where one kind of resource keeps its tags."""

    async def read(self, resource_id: str) -> dict[str, str] | None:
        """The resource's tags; None if there is no such resource."""
        ...

    async def write(self, resource_id: str, tags: dict[str, str]) -> bool:
        """Replace the resource's tags; False if the resource is gone."""
        ...


def check_tags(c: v.Constraints, value: Any, where: str = "tags") -> dict[str, str] | None:
    """A `Tags` map as the API takes it: type and pattern problems are recorded in `c`
    (ValidationException); Lambda's limits are checked by `check_tag_limits`."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in value.items()
    ):
        c.fail(value, where, "Member must be a map of strings to strings")
        return None
    ok = True
    for key, val in value.items():
        if not 1 <= len(key) <= limits.TAG_KEY_MAX_CHARS or not _TAG_CHARS.fullmatch(key):
            c.fail(
                key,
                f"{where}.key",
                f"Member must have length between 1 and {limits.TAG_KEY_MAX_CHARS} and satisfy "
                f"regular expression pattern: {_TAG_TEXT}",
            )
            ok = False
        if len(val) > limits.TAG_VALUE_MAX_CHARS or not _TAG_CHARS.fullmatch(val):
            c.fail(
                val,
                f"{where}.value",
                f"Member must have length less than or equal to {limits.TAG_VALUE_MAX_CHARS} "
                f"and satisfy regular expression pattern: {_TAG_TEXT}",
            )
            ok = False
    return dict(value) if ok else None


def check_tag_limits(tags: dict[str, str]) -> None:
    """Lambda's rules on a resource's whole tag set: at most 50, no `aws:` keys."""
    for key in tags:
        if key.lower().startswith(_RESERVED_PREFIX):
            raise InvalidParameterValueError(
                f"Tag key {key} is invalid: keys prefixed with 'aws:' are reserved for AWS use."
            )
    if len(tags) > limits.TAGS_MAX:
        raise InvalidParameterValueError(
            f"Number of tags exceeds resource tag limit. A resource can have at most "
            f"{limits.TAGS_MAX} tags."
        )


class FunctionTags:
    """Functions' tags, in the functions table (deleted with the function)."""

    def __init__(self, run: Runner, metadata: MetadataStore) -> None:
        self._run = run
        self._metadata = metadata

    async def read(self, resource_id: str) -> dict[str, str] | None:
        return await self._run(self._metadata.function_tags, resource_id)

    async def write(self, resource_id: str, tags: dict[str, str]) -> bool:
        return await self._run(self._metadata.set_function_tags, resource_id, tags)


class CodeSigningConfigTags:
    """Code signing configurations' tags, kept with each configuration."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[dict[str, str] | None]],
        write: Callable[[str, dict[str, str]], Awaitable[bool]],
    ) -> None:
        self._read = read
        self._write = write

    async def read(self, resource_id: str) -> dict[str, str] | None:
        return await self._read(resource_id)

    async def write(self, resource_id: str, tags: dict[str, str]) -> bool:
        return await self._write(resource_id, tags)


class TagService:
    """TagResource, UntagResource and ListTags for every kind registered."""

    def __init__(self, region: str, account: str) -> None:
        self._region = region
        self._account = account
        self._holders: dict[str, TagHolder] = {}
        # Tagging reads, changes and writes a resource's whole set: one change at a time keeps
        # one from losing another's keys.
        self._writing = asyncio.Lock()

    def register(self, kind: str, holder: TagHolder) -> None:
        """Have `holder` keep the tags of resources of `kind` (`function`, ...)."""
        self._holders[kind] = holder

    async def list(self, arn: Any) -> dict[str, str]:
        holder, resource_id = self._parse(arn)
        found = await holder.read(resource_id)
        if found is None:
            raise _not_found(arn)
        return found

    async def tag(self, arn: Any, tags: Any) -> None:
        c = v.Constraints()
        if tags is None:
            c.fail(None, "tags", "Member must not be null")
        checked = check_tags(c, tags)
        holder, resource_id = self._parse(arn, c)
        assert checked is not None
        async with self._writing:
            current = await holder.read(resource_id)
            if current is None:
                raise _not_found(arn)
            merged = {**current, **checked}
            check_tag_limits(merged)
            if not await holder.write(resource_id, merged):
                raise _not_found(arn)

    async def untag(self, arn: Any, keys: Any) -> None:
        c = v.Constraints()
        if keys is None:
            c.fail(None, "tagKeys", "Member must not be null")
        elif not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            c.fail(keys, "tagKeys", "Member must be a list of strings")
        else:
            for i, key in enumerate(keys):
                if not 1 <= len(key) <= limits.TAG_KEY_MAX_CHARS:
                    c.fail(
                        key,
                        f"tagKeys.{i + 1}.member",
                        f"Member must have length between 1 and {limits.TAG_KEY_MAX_CHARS}",
                    )
        holder, resource_id = self._parse(arn, c)
        assert isinstance(keys, list)
        for key in keys:
            if key.lower().startswith(_RESERVED_PREFIX):
                raise InvalidParameterValueError(
                    f"Tag key {key} is invalid: keys prefixed with 'aws:' are reserved for AWS use."
                )
        async with self._writing:
            current = await holder.read(resource_id)
            if current is None:
                raise _not_found(arn)
            kept = {k: x for k, x in current.items() if k not in keys}
            if kept != current and not await holder.write(resource_id, kept):
                raise _not_found(arn)

    def _parse(self, arn: Any, c: v.Constraints | None = None) -> tuple[TagHolder, str]:
        """The holder and resource id `arn` names. Raises ValidationException for a malformed
        ARN (with the problems already in `c`), InvalidParameterValueException for a version
        or alias, ResourceNotFoundException for what cannot exist here."""
        c = c or v.Constraints()
        m = _TAGGABLE.fullmatch(arn) if isinstance(arn, str) and len(arn) <= 10_000 else None
        if m is None or not _TAGGABLE_ID[m["kind"]].fullmatch(m["id"]):
            c.fail(
                arn, "resource", f"Member must satisfy regular expression pattern: {_TAGGABLE_TEXT}"
            )
            m = None
        c.check()
        assert m is not None
        kind, resource_id = m["kind"], m["id"]
        if kind == "function" and ":" in resource_id:
            name, _, qualifier = resource_id.partition(":")
            if qualifier != LATEST:
                raise InvalidParameterValueError(
                    "Tags on function aliases and versions are not supported. Please specify "
                    "a function ARN."
                )
            resource_id = name
        holder = self._holders.get(kind)
        if holder is None or m["region"] != self._region or m["account"] != self._account:
            raise _not_found(arn)
        return holder, resource_id


def _not_found(arn: str) -> ResourceNotFoundError:
    if ":function:" in arn:
        return ResourceNotFoundError(f"Function not found: {arn}")
    return ResourceNotFoundError(f"The resource you requested does not exist. ({arn})")
