"""Stacks deployed from templates: the records `lamina deploy --template` keeps on the server.

The CLI provisions a stack's resources through the public APIs (as `sam deploy` drives
CloudFormation's); what it provisioned is written here at the end of each deploy, and read at
the start of the next one to know what to update and what to delete. The server checks each
record's shape, not its meaning: the resources themselves are owned by their own services.

A stack name follows CloudFormation's rule: a letter, then letters, digits and hyphens, at
most 128 characters.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from lamina.errors import ResourceNotFoundError, ValidationError
from lamina.models import Stack
from lamina.store.stacks import StackStore

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")
#: what a stack record may say of itself (CloudFormation's stack status words)
STATUSES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "ROLLBACK_COMPLETE",
        "DELETE_FAILED",
        "UPDATE_ROLLBACK_FAILED",
    }
)
_RESOURCE_KEYS = frozenset(
    {
        "type",
        "physical_ref",
        "attributes",
        "properties_digest",
        "properties",
        "status",
        "deletion_policy",
    }
)
#: a record's size, as JSON (resolved properties included): generous, but bounded
RECORD_MAX = 4 * 1024 * 1024


class Runner(Protocol):
    """Runs blocking store work off the event loop (the control worker thread)."""

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"1 validation error detected: Value '{name}' at 'stackName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "[a-zA-Z][-a-zA-Z0-9]* and have length less than or equal to 128"
        )
    return name


def _object(value: Any, member: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError(f"{member} must be a JSON object.")
    return dict(value)


def _resources(value: Any) -> dict[str, Any]:
    resources = _object(value, "Resources")
    for logical_id, record in resources.items():
        if not isinstance(record, Mapping):
            raise ValidationError(f"Resources.{logical_id} must be a JSON object.")
        unknown = sorted(set(record) - _RESOURCE_KEYS)
        if unknown:
            raise ValidationError(f"Resources.{logical_id} has no member {', '.join(unknown)}.")
        for key in ("type", "physical_ref", "status"):
            if not isinstance(record.get(key), str):
                raise ValidationError(f"Resources.{logical_id}.{key} must be a string.")
        for key in ("attributes", "properties"):
            if not isinstance(record.get(key, {}), Mapping):
                raise ValidationError(f"Resources.{logical_id}.{key} must be a JSON object.")
    return resources


class StackService:
    """The stack records."""

    def __init__(self, store: StackStore, runner: Runner) -> None:
        self._store = store
        self._runner = runner

    async def get(self, name: str) -> Stack:
        stack = await self._runner.run(self._store.get, check_name(name))
        if stack is None:
            raise ResourceNotFoundError(f"Stack with id {name} does not exist")
        return stack

    async def stacks(self) -> list[Stack]:
        return await self._runner.run(self._store.all)

    async def put(self, name: str, body: Mapping[str, Any]) -> Stack:
        """Create or replace the record of stack `name` (its creation time kept)."""
        import json

        check_name(name)
        template_path = body.get("TemplatePath", "")
        if not isinstance(template_path, str):
            raise ValidationError("TemplatePath must be a string.")
        status = body.get("Status", "CREATE_COMPLETE")
        if status not in STATUSES:
            raise ValidationError(f"Status must be one of {', '.join(sorted(STATUSES))}.")
        parameters = _object(body.get("Parameters"), "Parameters")
        resources = _resources(body.get("Resources"))
        outputs = _object(body.get("Outputs"), "Outputs")
        size = len(json.dumps([parameters, resources, outputs]))
        if size > RECORD_MAX:
            raise ValidationError(
                f"The stack record is {size} bytes; at most {RECORD_MAX} are kept."
            )
        now = datetime.now(UTC)
        current = await self._runner.run(self._store.get, name)
        stack = Stack(
            name=name,
            template_path=template_path,
            parameters=parameters,
            resources=resources,
            outputs=outputs,
            status=str(status),
            created=current.created if current is not None else now,
            updated=now,
        )
        await self._runner.run(self._store.put, stack)
        return stack

    async def delete(self, name: str) -> None:
        if not await self._runner.run(self._store.delete, check_name(name)):
            raise ResourceNotFoundError(f"Stack with id {name} does not exist")
