"""The IAM actions and resources of the runtime management, recursion, scaling config and
capacity provider operations."""

from __future__ import annotations

import pytest

from lamina.api.access import AccessMap

ACCOUNT = "000000000000"
FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:fn"
CP = f"arn:aws:lambda:us-east-1:{ACCOUNT}:capacity-provider:pool"
access = AccessMap("us-east-1", ACCOUNT)


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "action", "resource"),
    [
        (
            "GET",
            "/2021-07-20/functions/fn/runtime-management-config",
            {},
            None,
            "GetRuntimeManagementConfig",
            FN,
        ),
        (
            "PUT",
            "/2021-07-20/functions/fn/runtime-management-config",
            {"Qualifier": "3"},
            None,
            "PutRuntimeManagementConfig",
            f"{FN}:3",
        ),
        (
            "GET",
            "/2024-08-31/functions/fn/recursion-config",
            {},
            None,
            "GetFunctionRecursionConfig",
            FN,
        ),
        (
            "PUT",
            "/2024-08-31/functions/fn/recursion-config",
            {},
            None,
            "PutFunctionRecursionConfig",
            FN,
        ),
        (
            "PUT",
            "/2025-11-30/functions/fn/function-scaling-config",
            {"Qualifier": "2"},
            None,
            "PutFunctionScalingConfig",
            f"{FN}:2",
        ),
        (
            "GET",
            "/2025-11-30/functions/fn/function-scaling-config",
            {"Qualifier": "2"},
            None,
            "GetFunctionScalingConfig",
            f"{FN}:2",
        ),
        (
            "POST",
            "/2025-11-30/capacity-providers",
            {},
            b'{"CapacityProviderName": "pool"}',
            "CreateCapacityProvider",
            CP,
        ),
        ("GET", "/2025-11-30/capacity-providers", {}, None, "ListCapacityProviders", "*"),
        ("GET", "/2025-11-30/capacity-providers/pool", {}, None, "GetCapacityProvider", CP),
        ("GET", f"/2025-11-30/capacity-providers/{CP}", {}, None, "GetCapacityProvider", CP),
        ("PUT", "/2025-11-30/capacity-providers/pool", {}, None, "UpdateCapacityProvider", CP),
        ("DELETE", "/2025-11-30/capacity-providers/pool", {}, None, "DeleteCapacityProvider", CP),
        (
            "GET",
            "/2025-11-30/capacity-providers/pool/function-versions",
            {},
            None,
            "ListFunctionVersionsByCapacityProvider",
            CP,
        ),
    ],
)
def test_actions_and_resources(
    method: str, path: str, query: dict[str, str], body: bytes | None, action: str, resource: str
) -> None:
    got = access.request(method, path, query, {}, body)
    assert got is not None
    assert (got.action, got.resource) == (f"lambda:{action}", resource)


def test_create_capacity_provider_is_named_by_its_body() -> None:
    assert access.needs_body("POST", "/2025-11-30/capacity-providers")
    assert not access.needs_body("GET", "/2025-11-30/capacity-providers")
