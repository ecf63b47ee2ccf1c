"""Execution roles defined in Lamina: what a function's role session is allowed to do.

A role has IAM's name rules (`[\\w+=,.@-]{1,64}`, unique without regard to case), an optional
path (`/a/b/`), the ARN `arn:aws:iam::<account>:role<path><name>`, one or more identity
policy documents, a description and a creation time. A function names its role by ARN
(`Role`); `policies_for` gives that ARN's policies, which are what the function's role
session is authorized with.

Unknown roles: a well-formed Role ARN that names no role here is accepted on a function and
its session gets no policies (it may do nothing), unless the server runs with
`--strict-roles`: then CreateFunction/UpdateFunctionConfiguration refuse it as Lambda refuses
a role it cannot assume. Deleting a role that functions use is allowed, as IAM allows it; their
sessions then get nothing.

Roles are kept in memory: authorizing a request must not read the database.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from lamina.auth.principal import PolicyDocument
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes
from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    LaminaError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import Role
from lamina.settings import Settings
from lamina.store.roles import RoleStore

T = TypeVar("T")

#: `validator(document)`: deeper checks of one policy document (the policy engine's);
#: raises ValueError (or a LaminaError) with a message for a document it refuses
PolicyValidator = Callable[[PolicyDocument], None]

# IAM's patterns (the IAM API reference: RoleName, Path). IAM's `\w` is ASCII.
_NAME = re.compile(r"[\w+=,.@-]+", re.ASCII)
_NAME_MAX = 64
_PATH = re.compile(r"/|/[\x21-\x7e]+/")
_PATH_MAX = 512
_DESCRIPTION_MAX = 1000
#: IAM's quota on a role's inline policies, together (characters, whitespace not counted)
POLICY_SIZE_MAX = 10_240
POLICY_VERSIONS = ("2012-10-17", "2008-10-17")
_DOCUMENT_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
CANNOT_ASSUME = "The role defined for the function cannot be assumed by Lambda."


class Runner(Protocol):
    """Runs blocking store work off the event loop (the control worker thread)."""

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


class RoleService:
    """The roles, their store, and the answers authorization needs from them."""

    def __init__(
        self,
        settings: Settings,
        store: RoleStore,
        runner: Runner,
        validator: PolicyValidator | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._runner = runner
        #: deeper checks of each policy document, if the policy engine plugs one in
        self.validator = validator
        self._by_key: dict[str, Role] = {}  # by lower-cased name
        self._by_arn: dict[str, Role] = {}
        self._writing = asyncio.Lock()
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    async def load(self) -> None:
        for role in await self._runner.run(self._store.all):
            self._keep(role)

    async def refresh(self, name: str) -> None:
        """Another node changed the role `name` ("*": any role): re-read it."""
        async with self._writing:
            fresh = {r.name.lower(): r for r in await self._runner.run(self._store.all)}
            keys = fresh.keys() | self._by_key.keys() if name == "*" else {name.lower()}
            for key in keys:
                held, role = self._by_key.get(key), fresh.get(key)
                if held == role:
                    continue
                if held is not None:
                    del self._by_key[key]
                    self._by_arn.pop(held.arn, None)
                if role is not None:
                    self._keep(role)

    # -- reads (no I/O) ------------------------------------------------------------

    def policies_for(self, role_arn: str | None) -> tuple[PolicyDocument, ...]:
        """The policies of the role with this ARN: empty for a role Lamina does not know,
        which therefore grants nothing."""
        role = self._by_arn.get(role_arn) if role_arn else None
        return role.policies if role is not None else ()

    def check_assumable(self, role_arn: str) -> None:
        """Refuse a function's role that Lamina does not know, with `--strict-roles` (without
        it every well-formed role is accepted, and an unknown one grants nothing)."""
        if self._settings.strict_roles and role_arn not in self._by_arn:
            raise InvalidParameterValueError(CANNOT_ASSUME)

    def get(self, name: str) -> Role:
        role = self._by_key.get(_checked_name(name).lower())
        if role is None:
            raise _not_found(name)
        return role

    def roles(self) -> list[Role]:
        """Every role, by name."""
        return sorted(self._by_key.values(), key=lambda r: r.name.lower())

    def arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self._settings.account_id}:role{path}{name}"

    # -- writes --------------------------------------------------------------------

    async def put(
        self, name: Any, policies: Any, description: Any = None, path: Any = None
    ) -> Role:
        """Create the role `name`, or replace the one of that name (its creation time kept)."""
        c = v.Constraints()
        checked = c.string(name, "roleName", max_len=_NAME_MAX, pattern=_NAME, required=True)
        checked_path = c.string(path, "path", max_len=_PATH_MAX, pattern=_PATH) or "/"
        text = c.string(description, "description", max_len=_DESCRIPTION_MAX) or ""
        c.check()
        assert checked is not None
        documents = self._documents(policies)
        async with self._writing:
            current = self._by_key.get(checked.lower())
            if current is not None and current.name != checked:
                raise ResourceConflictError(
                    f"Role {current.name} exists: role names are unique without regard to case."
                )
            role = Role(
                name=checked,
                path=checked_path,
                arn=self.arn(checked, checked_path),
                policies=documents,
                description=text,
                created=current.created if current is not None else datetime.now(UTC),
            )
            await self._runner.run(self._store.put, role)
            if current is not None:
                self._by_arn.pop(current.arn, None)
            self._keep(role)
        await changes.tell(self.feed, "role", role.name)
        return role

    async def delete(self, name: str) -> None:
        """Delete a role. Functions that name it keep it; their sessions then get nothing."""
        key = _checked_name(name).lower()
        async with self._writing:
            role = self._by_key.get(key)
            if role is None:
                raise _not_found(name)
            await self._runner.run(self._store.delete, role.name)
            del self._by_key[key]
            self._by_arn.pop(role.arn, None)
        await changes.tell(self.feed, "role", role.name)

    # -- internals -----------------------------------------------------------------

    def _keep(self, role: Role) -> None:
        self._by_key[role.name.lower()] = role
        self._by_arn[role.arn] = role

    def _documents(self, policies: Any) -> tuple[dict[str, Any], ...]:
        if isinstance(policies, Mapping):
            policies = [policies]
        if not isinstance(policies, list) or not policies:
            raise InvalidParameterValueError(
                "Policies must be one policy document or a non-empty list of them."
            )
        documents = []
        for i, document in enumerate(policies, 1):
            where = f"policy {i}" if len(policies) > 1 else "the policy"
            check_policy_shape(document, where)
            if self.validator is not None:
                try:
                    self.validator(document)
                except LaminaError:
                    raise
                except ValueError as e:
                    raise _malformed(where, str(e)) from None
            documents.append(dict(document))
        size = sum(len(re.sub(r"\s", "", json.dumps(d))) for d in documents)
        if size > POLICY_SIZE_MAX:
            raise InvalidParameterValueError(
                f"The role's policies are {size} characters (whitespace not counted); IAM's "
                f"quota for a role's inline policies, together, is {POLICY_SIZE_MAX}."
            )
        return tuple(documents)


def check_policy_shape(document: Any, where: str = "the policy") -> None:
    """Refuse a document that is not an identity policy's shape: `{"Version", "Statement"}`,
    each statement with Effect, Action or NotAction, Resource or NotResource, and no
    Principal. What actions and resources mean is the policy engine's business."""
    if not isinstance(document, Mapping):
        raise _malformed(where, "a policy document is a JSON object")
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        raise _malformed(where, f"unknown member {', '.join(unknown)}")
    version = document.get("Version")
    if version is not None and version not in POLICY_VERSIONS:
        raise _malformed(where, f"Version must be one of {', '.join(POLICY_VERSIONS)}")
    statements = document.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _malformed(where, "Statement must be a statement or a non-empty list of them")
    for n, statement in enumerate(statements, 1):
        _check_statement(statement, f"{where}, statement {n}")


def _check_statement(statement: Any, where: str) -> None:
    if not isinstance(statement, Mapping):
        raise _malformed(where, "a statement is a JSON object")
    if "Principal" in statement or "NotPrincipal" in statement:
        # IAM's rule for identity policies: the principal is whoever the policy is attached to.
        raise _malformed(where, "an identity policy must not specify a principal")
    unknown = sorted(set(statement) - _STATEMENT_KEYS)
    if unknown:
        raise _malformed(where, f"unknown member {', '.join(unknown)}")
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise _malformed(where, "Effect must be Allow or Deny")
    for one, other in (("Action", "NotAction"), ("Resource", "NotResource")):
        given = [key for key in (one, other) if key in statement]
        if len(given) != 1:
            raise _malformed(where, f"exactly one of {one} and {other} is required")
        value = statement[given[0]]
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(x, str) and x for x in values)
        ):
            raise _malformed(where, f"{given[0]} must be a string or a non-empty list of them")
    condition = statement.get("Condition")
    if condition is not None and not (
        isinstance(condition, Mapping) and all(isinstance(x, Mapping) for x in condition.values())
    ):
        raise _malformed(where, "Condition must map operators to objects of keys and values")
    sid = statement.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise _malformed(where, "Sid must be a string")


def _checked_name(name: Any) -> str:
    c = v.Constraints()
    checked = c.string(name, "roleName", max_len=_NAME_MAX, pattern=_NAME, required=True)
    c.check()
    assert checked is not None
    return checked


def _malformed(where: str, why: str) -> InvalidParameterValueError:
    return InvalidParameterValueError(f"Malformed policy document: {where}: {why}.")


def _not_found(name: str) -> ResourceNotFoundError:
    # IAM's NoSuchEntity wording.
    return ResourceNotFoundError(f"The role with name {name} cannot be found.")
