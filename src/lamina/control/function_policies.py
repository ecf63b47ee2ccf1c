"""Resource-based policies of functions (AddPermission, RemovePermission, GetPolicy), with
Lambda's rules, and the lookups that triggers and authorization make against them.

A policy belongs to the unqualified function (`$LATEST`), a published version or an alias: each
has its own, as on Lambda (a statement on the unqualified function does not cover `:prod`).
Policies are kept in memory, parsed, because authorizing an Invoke or a function URL request
must not touch the database. The store deletes a policy with its function, version or alias
(one transaction); `forget` and `forget_function` drop it here.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.auth.policy import Policy, policy_json
from lamina.control import validation as v
from lamina.control.stored_policies import StoredPolicy, check_size, statements_of
from lamina.errors import (
    InvalidParameterValueError,
    PreconditionFailedError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LATEST
from lamina.store.function_policies import FunctionPolicyStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

# Patterns from botocore's lambda model (AddPermission's members).
_STATEMENT_ID = re.compile(r"([a-zA-Z0-9-_]+)")
_REMOVE_STATEMENT_ID = re.compile(r"([a-zA-Z0-9-_.]+)")
_ACTION = re.compile(r"(lambda:[*]|lambda:[a-zA-Z]+|[*])")
_PRINCIPAL = re.compile(r"[^\s]+")
_SOURCE_ARN = re.compile(
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+"
    r"-\d{1})?:(\d{12})?:(.*)"
)
_ACCOUNT = re.compile(r"\d{12}")
_EVENT_SOURCE_TOKEN = re.compile(r"[a-zA-Z0-9._\-]+")
_ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
# A service principal: `events.amazonaws.com`, `s3.amazonaws.com`, `elasticloadbalancing...`.
_SERVICE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.(amazonaws\.com|amazon\.com)")
_AUTH_TYPES = ("NONE", "AWS_IAM")


@dataclass
class PermissionInput:
    """An AddPermission request as the caller sent it (values not yet checked)."""

    statement_id: Any = None
    action: Any = None
    principal: Any = None
    source_arn: Any = None
    source_account: Any = None
    event_source_token: Any = None
    principal_org_id: Any = None
    function_url_auth_type: Any = None
    invoked_via_function_url: Any = None
    revision_id: Any = None


class FunctionPolicies:
    def __init__(self, functions: FunctionService, store: FunctionPolicyStore) -> None:
        self._functions = functions
        self._store = store
        #: (function name, "" or a version or an alias) -> its policy
        self._policies: dict[tuple[str, str], StoredPolicy] = {}
        # AddPermission and RemovePermission read, change and write the whole document: one
        # write at a time keeps one from losing another's statement.
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        stored = await self._functions.run(self._store.all)
        self._policies = {
            key: StoredPolicy.of(text, revision) for key, (text, revision) in stored.items()
        }

    # -- reads ---------------------------------------------------------------------

    def policy_for(self, name: str, qualifier: str | None) -> Policy | None:
        """The parsed policy of `name` (unqualified, `$LATEST`: the function's own) or of one
        version or alias; None if it has none (no I/O: the invoke path)."""
        found = self._policies.get((name, _key(qualifier)))
        return found.policy if found is not None else None

    def get(self, ref: FunctionRef) -> tuple[str, str]:
        """GetPolicy: the policy's text and revision id."""
        key = self._resolve(ref)
        found = self._policies.get(key)
        if found is None:
            raise _no_policy()
        return found.text, found.revision_id

    # -- writes --------------------------------------------------------------------

    async def add(self, ref: FunctionRef, req: PermissionInput) -> dict[str, Any]:
        """AddPermission: the statement added (as it is in the policy)."""
        statement = self._statement(ref, req)
        key = self._resolve(ref)
        async with self._writing:
            current = self._policies.get(key)
            if req.revision_id is not None and (
                current is None or current.revision_id != req.revision_id
            ):
                raise _stale_revision()
            statements = statements_of(current)
            if any(s.get("Sid") == statement["Sid"] for s in statements):
                raise ResourceConflictError(
                    f"The statement id ({statement['Sid']}) provided already exists. Please "
                    "provide a new statement id, or remove the existing statement."
                )
            await self._write(key, current, [*statements, statement])
        return statement

    async def remove(self, ref: FunctionRef, statement_id: Any, revision_id: Any = None) -> None:
        """RemovePermission: drop one statement (the policy goes with its last one)."""
        c = v.Constraints()
        c.string(
            statement_id,
            "statementId",
            max_len=100,
            pattern=_REMOVE_STATEMENT_ID,
            required=True,
        )
        c.check()
        key = self._resolve(ref)
        async with self._writing:
            current = self._policies.get(key)
            if current is None:
                raise _no_policy()
            if revision_id is not None and revision_id != current.revision_id:
                raise _stale_revision()
            statements = statements_of(current)
            kept = [s for s in statements if s.get("Sid") != statement_id]
            if len(kept) == len(statements):
                raise ResourceNotFoundError(
                    f"Statement {statement_id} is not found in resource policy."
                )
            await self._write(key, current, kept)

    async def replace(
        self, ref: FunctionRef, document: str | None, revision_id: str | None
    ) -> tuple[str, str] | None:
        """PutResourcePolicy (`document` a checked policy's text) and DeleteResourcePolicy
        (`document` None): the whole policy at once, if its revision is still `revision_id`
        (when given). The new policy's text and revision id; None after a delete."""
        key = self._resolve(ref)
        async with self._writing:
            current = self._policies.get(key)
            if revision_id is not None and (current is None or current.revision_id != revision_id):
                raise _stale_revision()
            if document is None:
                if current is None:
                    raise _no_policy()
                await self._write(key, current, [])
                return None
            await self._write(key, current, None, text=document)
            written = self._policies[key]
            return written.text, written.revision_id

    def forget(self, name: str, qualifier: str) -> None:
        """Drop a deleted version's or alias's policy from memory (the store deleted it)."""
        self._policies.pop((name, _key(qualifier)), None)

    def forget_function(self, name: str) -> None:
        for key in [k for k in self._policies if k[0] == name]:
            del self._policies[key]

    # -- internals -----------------------------------------------------------------

    async def _write(
        self,
        key: tuple[str, str],
        current: StoredPolicy | None,
        statements: list[Any] | None,
        *,
        text: str | None = None,
    ) -> None:
        """Store the policy of `statements` (none: no policy), or the whole document `text`."""
        if statements is not None:
            text = policy_json(statements) if statements else None
        check_size(text)
        revision = str(uuid.uuid4())
        expect = current.revision_id if current is not None else None
        written = await self._functions.run(
            lambda: self._store.put(key[0], key[1], text, revision, expect_revision=expect)
        )
        if not written:
            # The function, version or alias was deleted meanwhile (one writer here, so a
            # revision cannot have moved under us).
            raise ResourceNotFoundError(
                f"Function not found: {self._functions.arn(key[0], key[1] or None)}"
            )
        if text is None:
            self._policies.pop(key, None)
        else:
            self._policies[key] = StoredPolicy.of(text, revision)
        await self._functions.changed(key[0])

    def _resolve(self, ref: FunctionRef) -> tuple[str, str]:
        """The policy key `ref` names: the function must exist, and the version or alias."""
        self._functions.require(ref.name)
        key = _key(ref.qualifier)
        if key:
            if key.isdigit():
                exists = self._functions.version(ref.name, key) is not None
            else:
                try:
                    self._functions.aliases.get(ref.name, key)
                    exists = True
                except ResourceNotFoundError:
                    exists = False
            if not exists:
                raise ResourceNotFoundError(
                    f"Function not found: {self._functions.arn(ref.name, key)}"
                )
        return ref.name, key

    def _statement(self, ref: FunctionRef, req: PermissionInput) -> dict[str, Any]:
        """Check AddPermission's members; the statement Lambda writes for them."""
        c = v.Constraints()
        sid = c.string(
            req.statement_id, "statementId", max_len=100, pattern=_STATEMENT_ID, required=True
        )
        action = c.string(req.action, "action", max_len=10_000, pattern=_ACTION, required=True)
        principal = c.string(
            req.principal, "principal", max_len=2048, pattern=_PRINCIPAL, required=True
        )
        source_arn = c.string(req.source_arn, "sourceArn", max_len=10_000, pattern=_SOURCE_ARN)
        source_account = c.string(req.source_account, "sourceAccount", max_len=12, pattern=_ACCOUNT)
        token = c.string(
            req.event_source_token, "eventSourceToken", max_len=256, pattern=_EVENT_SOURCE_TOKEN
        )
        org = c.string(req.principal_org_id, "principalOrgID", max_len=34, pattern=_ORG_ID)
        auth_type = req.function_url_auth_type
        if auth_type is not None and auth_type not in _AUTH_TYPES:
            c.fail(
                auth_type,
                "functionUrlAuthType",
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            )
        via_url = req.invoked_via_function_url
        if via_url is not None and not isinstance(via_url, bool):
            c.fail(via_url, "invokedViaFunctionUrl", "Member must be a boolean")
        c.check()
        assert sid is not None and action is not None and principal is not None
        if via_url and action != "lambda:InvokeFunction":
            raise InvalidParameterValueError(
                "InvokedViaFunctionUrl is only valid with the lambda:InvokeFunction action."
            )
        string_equals: dict[str, str] = {}
        if source_account is not None:
            string_equals["AWS:SourceAccount"] = source_account
        if token is not None:
            string_equals["lambda:EventSourceToken"] = token
        if org is not None:
            string_equals["aws:PrincipalOrgID"] = org
        if auth_type is not None:
            string_equals["lambda:FunctionUrlAuthType"] = auth_type
        condition: dict[str, Any] = {}
        if string_equals:
            condition["StringEquals"] = string_equals
        if source_arn is not None:
            condition["ArnLike"] = {"AWS:SourceArn": source_arn}
        if via_url:
            condition["Bool"] = {"lambda:InvokedViaFunctionUrl": "true"}
        qualifier = _key(ref.qualifier) or None
        statement: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": self._principal(principal),
            "Action": action,
            "Resource": self._functions.arn(ref.name, qualifier),
        }
        if condition:
            statement["Condition"] = condition
        return statement

    def _principal(self, value: str) -> str | dict[str, str]:
        """AddPermission's Principal as Lambda writes it into the statement."""
        if value == "*":
            return "*"
        if _ACCOUNT.fullmatch(value):
            return {"AWS": f"arn:aws:iam::{value}:root"}
        if value.startswith("arn:"):
            return {"AWS": value}
        if _SERVICE.fullmatch(value):
            return {"Service": value}
        raise InvalidParameterValueError(
            "The provided principal was invalid. Please check the principal and try again."
        )


def _key(qualifier: str | None) -> str:
    """The store's qualifier: "" for the unqualified function (`$LATEST` is the same one)."""
    return "" if qualifier in (None, "", LATEST) else str(qualifier)


def _no_policy() -> ResourceNotFoundError:
    return ResourceNotFoundError("The resource you requested does not exist.")


def _stale_revision() -> PreconditionFailedError:
    return PreconditionFailedError(
        "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy "
        "API to retrieve the latest Revision Id"
    )
