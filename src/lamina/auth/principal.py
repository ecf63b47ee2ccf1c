"""What authentication hands to authorization: the caller, and what the caller asks to do.

These types are the contract between the two halves of `auth/`: authentication (SigV4 and
the key store) produces a `Principal`; the API layer names each request's `AccessRequest`;
policy evaluation decides with both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: where authentication leaves the verified `Principal` in an ASGI request's scope
SCOPE_KEY = "lamina.principal"

#: an IAM-style policy document as parsed JSON ({"Version": ..., "Statement": [...]})
PolicyDocument = Mapping[str, Any]


@dataclass(frozen=True)
class Principal:
    """The caller of one request, once its signature has been verified."""

    #: the access key that signed the request
    access_key_id: str
    #: the caller's ARN: `arn:aws:iam::<account>:user/<name>` for an access key,
    #: `arn:aws:sts::<account>:assumed-role/<role>/<session>` for a function's role session
    arn: str
    #: the account the caller belongs to (Lamina has one)
    account: str
    #: the admin key may do everything, whatever policies say
    admin: bool = False
    #: identity policies attached to the key, or the role's policies for a role session
    policies: tuple[PolicyDocument, ...] = ()
    #: the role ARN of an execution-role session (None for access keys)
    role_arn: str | None = None


@dataclass(frozen=True)
class AccessRequest:
    """What a request asks to do, in IAM's terms."""

    #: `service:Operation`, as IAM names it (`lambda:InvokeFunction`, `logs:FilterLogEvents`)
    action: str
    #: the ARN of the resource acted on (`*` for actions without one, e.g. ListFunctions)
    resource: str
    #: condition keys and their values (`aws:SourceIp`, `aws:CurrentTime`,
    #: `lambda:FunctionUrlAuthType`, `aws:SourceArn`, ...); a list for multi-valued keys
    context: Mapping[str, str | list[str]] = field(default_factory=dict)


class Decision(StrEnum):
    """IAM's three outcomes: an explicit deny wins over any allow; no allow is a deny."""

    ALLOW = "allow"
    EXPLICIT_DENY = "explicit_deny"
    IMPLICIT_DENY = "implicit_deny"
