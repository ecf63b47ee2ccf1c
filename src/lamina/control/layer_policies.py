"""Resource-based policies of layer versions (AddLayerVersionPermission,
RemoveLayerVersionPermission, GetLayerVersionPolicy), with Lambda's rules, and the lookup
authorization makes against them.

Each layer version has its own policy, whose statements can only grant
`lambda:GetLayerVersion` to an account, to everyone (`*`), or to an organization's accounts
(`*` with `aws:PrincipalOrgID`). Authorization consults it (in memory, parsed) as the
resource policy of the layer version's ARN: for GetLayerVersion(ByArn) and for each layer a
CreateFunction or UpdateFunctionConfiguration attaches (see `api.authz`).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from lamina.auth.policy import Policy, policy_json
from lamina.control import validation as v
from lamina.control.stored_policies import StoredPolicy, check_size, statements_of
from lamina.errors import (
    InvalidParameterValueError,
    PreconditionFailedError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LayerVersion
from lamina.store.layer_policies import LayerPolicyStore

T = TypeVar("T")

# Patterns from botocore's lambda model (AddLayerVersionPermission's members).
_STATEMENT_ID = re.compile(r"([a-zA-Z0-9-_]+)")
_ACTION = re.compile(r"lambda:GetLayerVersion")
_PRINCIPAL = re.compile(r"\d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root")
_ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
_ACCOUNT = re.compile(r"\d{12}")


class LayerVersions(Protocol):
    """What the policies need of the layer service."""

    async def get(self, layer_name: Any, version: Any) -> LayerVersion: ...

    def layer_arn(self, name: str) -> str: ...

    def version_arn(self, name: str, version: int) -> str: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def changed(self, name: str) -> None: ...


class LayerPolicies:
    def __init__(self, layers: LayerVersions, store: LayerPolicyStore) -> None:
        self._layers = layers
        self._store = store
        #: (layer name, version) -> its policy
        self._policies: dict[tuple[str, int], StoredPolicy] = {}
        # Add and remove read, change and write the whole document: one write at a time.
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        stored = await self._layers.run(self._store.all)
        self._policies = {
            key: StoredPolicy.of(text, revision) for key, (text, revision) in stored.items()
        }

    def policy_for(self, name: str, version: int) -> Policy | None:
        """The parsed policy of one layer version, if it has one (no I/O)."""
        found = self._policies.get((name, version))
        return found.policy if found is not None else None

    def forget(self, name: str, version: int) -> None:
        """Drop a deleted version's policy from memory (the store deleted it)."""
        self._policies.pop((name, version), None)

    async def get(self, layer_name: Any, version: Any) -> tuple[str, str]:
        """GetLayerVersionPolicy: the policy's text and revision id."""
        lv = await self._version(layer_name, version)
        found = self._policies.get((lv.name, lv.version))
        if found is None:
            raise ResourceNotFoundError("No policy is associated with the given resource.")
        return found.text, found.revision_id

    async def add(
        self,
        layer_name: Any,
        version: Any,
        statement_id: Any,
        action: Any,
        principal: Any,
        organization_id: Any,
        revision_id: Any,
    ) -> tuple[dict[str, Any], str]:
        """AddLayerVersionPermission: the statement added and the policy's new revision."""
        c = v.Constraints()
        sid = c.string(
            statement_id, "statementId", max_len=100, pattern=_STATEMENT_ID, required=True
        )
        act = c.string(action, "action", max_len=22, pattern=_ACTION, required=True)
        who = c.string(principal, "principal", max_len=10_000, pattern=_PRINCIPAL, required=True)
        org = c.string(organization_id, "organizationId", max_len=34, pattern=_ORG_ID)
        if revision_id is not None and not isinstance(revision_id, str):
            c.fail(revision_id, "revisionId", "Member must be a string")
        c.check()
        assert sid is not None and act is not None and who is not None
        if org is not None and who != "*":
            raise InvalidParameterValueError(
                "OrganizationId can only be specified with the principal '*'."
            )
        lv = await self._version(layer_name, version)
        key = (lv.name, lv.version)
        statement: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": "*" if who == "*" else {"AWS": _root(who)},
            "Action": act,
            "Resource": self._layers.version_arn(lv.name, lv.version),
        }
        if org is not None:
            statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": org}}
        async with self._writing:
            current = self._policies.get(key)
            if revision_id is not None and (current is None or current.revision_id != revision_id):
                raise _stale_revision()
            statements = statements_of(current)
            if any(s.get("Sid") == sid for s in statements):
                raise ResourceConflictError(
                    f"The statement id ({sid}) provided already exists. Please provide a new "
                    "statement id, or remove the existing statement."
                )
            revision = await self._write(key, current, [*statements, statement])
        return statement, revision

    async def remove(
        self, layer_name: Any, version: Any, statement_id: Any, revision_id: Any
    ) -> None:
        """RemoveLayerVersionPermission: drop one statement (the policy goes with its last)."""
        c = v.Constraints()
        c.string(statement_id, "statementId", max_len=100, pattern=_STATEMENT_ID, required=True)
        c.check()
        lv = await self._version(layer_name, version)
        key = (lv.name, lv.version)
        async with self._writing:
            current = self._policies.get(key)
            if revision_id is not None and (current is None or current.revision_id != revision_id):
                raise _stale_revision()
            statements = statements_of(current)
            kept = [s for s in statements if s.get("Sid") != statement_id]
            if len(kept) == len(statements):
                raise ResourceNotFoundError(
                    f"Statement {statement_id} is not found in resource policy."
                )
            await self._write(key, current, kept)

    async def _version(self, layer_name: Any, version: Any) -> LayerVersion:
        try:
            return await self._layers.get(layer_name, version)
        except ResourceNotFoundError:
            # Name and number passed validation in `get`: both print as they were given.
            name = str(layer_name)
            arn = name if name.startswith("arn:") else self._layers.layer_arn(name)
            raise ResourceNotFoundError(
                f"Layer version {arn}:{int(version)} does not exist."
            ) from None

    async def _write(
        self, key: tuple[str, int], current: StoredPolicy | None, statements: list[Any]
    ) -> str:
        text = policy_json(statements) if statements else None
        check_size(text)
        revision = str(uuid.uuid4())
        expect = current.revision_id if current is not None else None
        written = await self._layers.run(
            lambda: self._store.put(key[0], key[1], text, revision, expect_revision=expect)
        )
        if not written:
            # The layer version was deleted meanwhile (one writer here).
            raise ResourceNotFoundError("The resource you requested does not exist.")
        if text is None:
            self._policies.pop(key, None)
        else:
            self._policies[key] = StoredPolicy.of(text, revision)
        await self._layers.changed(key[0])
        return revision


def _root(principal: str) -> str:
    return f"arn:aws:iam::{principal}:root" if _ACCOUNT.fullmatch(principal) else principal


def _stale_revision() -> PreconditionFailedError:
    return PreconditionFailedError(
        "The Revision Id provided does not match the latest Revision Id. Call the "
        "GetLayerVersionPolicy API to retrieve the latest Revision Id"
    )
