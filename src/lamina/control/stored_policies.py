"""A resource-based policy document as Lamina keeps it in memory (text, revision, parsed),
shared by functions' and layer versions' policies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lamina.auth.policy import Policy, parse
from lamina.errors import PolicyLengthExceededError
from lamina.limits import RESOURCE_POLICY_MAX_BYTES


@dataclass(frozen=True)
class StoredPolicy:
    text: str
    revision_id: str
    policy: Policy

    @classmethod
    def of(cls, text: str, revision_id: str) -> StoredPolicy:
        """A stored document, parsed once here for every later authorization."""
        return cls(text, revision_id, parse(text, resource_policy=True))


def statements_of(current: StoredPolicy | None) -> list[Any]:
    """The statements of a document (none without one), as a list to change."""
    if current is None:
        return []
    found = json.loads(current.text)["Statement"]
    return list(found) if isinstance(found, list) else [found]


def check_size(text: str | None) -> None:
    """Lambda's quota on the final document: PolicyLengthExceededException past it."""
    if text is not None and len(text.encode()) > RESOURCE_POLICY_MAX_BYTES:
        raise PolicyLengthExceededError(
            f"The final policy size ({len(text.encode())}) is bigger than the limit "
            f"({RESOURCE_POLICY_MAX_BYTES})."
        )
