"""GetResourcePolicy, PutResourcePolicy and DeleteResourcePolicy: a resource's whole policy
document by ARN.

botocore's model addresses functions (unqualified or qualified by a version or alias) and
runtimes (`runtime/...`, AWS-managed runtime resources Lamina does not have). A function's
document is the same policy AddPermission and RemovePermission edit statement by statement
(`function_policies`), so both APIs see each other's changes, as on Lambda.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.auth.policy import PolicyError, parse
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError
from lamina.limits import RESOURCE_POLICY_MAX_BYTES
from lamina.models import LATEST

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

_ARN_TEXT = (
    r"arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"(function:[a-zA-Z0-9-_]+(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_])+)?|runtime/[a-zA-Z0-9-_./]+)"
)
_ARN = re.compile(
    r"arn:(aws[a-zA-Z-]*)?:lambda:(?P<region>(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+"
    r"-\d{1}):(?P<account>\d{12}):(function:(?P<name>[a-zA-Z0-9-_]+)"
    r"(:(?P<qualifier>\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?|runtime/[a-zA-Z0-9-_./]+)"
)
_REVISION = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ResourcePolicies:
    """The whole-document policy operations, on the resources Lamina has."""

    def __init__(self, functions: FunctionService, region: str, account: str) -> None:
        self._functions = functions
        self._region = region
        self._account = account

    def get(self, arn: Any) -> tuple[str, str]:
        """GetResourcePolicy: the policy's text and revision id."""
        return self._functions.policies.get(self._ref(arn))

    async def put(self, arn: Any, policy: Any, revision_id: Any) -> tuple[str, str]:
        """PutResourcePolicy: replace the policy; its text and new revision id."""
        c = v.Constraints()
        ref = self._ref(arn, c, check=False)
        text = c.string(policy, "policy", max_len=RESOURCE_POLICY_MAX_BYTES, required=True)
        if text == "":
            c.fail(text, "policy", "Member must have length greater than or equal to 1")
        revision = c.string(revision_id, "revisionId", max_len=36, pattern=_REVISION)
        c.check()
        assert text is not None
        document = _checked_document(text)
        written = await self._functions.policies.replace(ref, document, revision)
        assert written is not None
        return written

    async def delete(self, arn: Any, revision_id: Any) -> None:
        c = v.Constraints()
        ref = self._ref(arn, c, check=False)
        revision = c.string(revision_id, "revisionId", max_len=36, pattern=_REVISION)
        c.check()
        await self._functions.policies.replace(ref, None, revision)

    def _ref(self, arn: Any, c: v.Constraints | None = None, *, check: bool = True) -> FunctionRef:
        """The function (version, alias) `arn` names. A malformed ARN is recorded in `c`
        (ValidationException); what cannot exist here is ResourceNotFoundException."""
        c = c or v.Constraints()
        m = _ARN.fullmatch(arn) if isinstance(arn, str) and len(arn) <= 512 else None
        if m is None:
            c.fail(
                arn, "resourceArn", f"Member must satisfy regular expression pattern: {_ARN_TEXT}"
            )
        if check or m is None:
            c.check()
        assert m is not None
        name, qualifier = m["name"], m["qualifier"]
        if (
            name is None  # a runtime: none here
            or m["region"] != self._region
            or m["account"] != self._account
            or (qualifier is not None and qualifier.startswith(f"{LATEST}."))
        ):
            raise ResourceNotFoundError(f"The resource you requested does not exist. ({arn})")
        return FunctionRef(name, qualifier)


def _checked_document(text: str) -> str:
    """The policy as stored: checked as a resource policy (every statement names its
    principal), its top-level members in AWS's spelling so AddPermission can extend it."""
    try:
        parse(text, resource_policy=True)
    except PolicyError as e:
        raise InvalidParameterValueError(f"The policy is not valid: {e}") from None
    raw = json.loads(text)
    keys = {k.lower(): k for k in raw}
    statements = raw[keys["statement"]]
    out: dict[str, Any] = {"Version": raw.get(keys.get("version", "Version"), "2008-10-17")}
    if "id" in keys:
        out["Id"] = raw[keys["id"]]
    out["Statement"] = statements if isinstance(statements, list) else [statements]
    return json.dumps(out, separators=(",", ":"))
