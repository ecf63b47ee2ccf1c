"""RoleService: the policies a role session gets, names, paths and policy shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lamina.auth.principal import PolicyDocument
from lamina.control.roles import CANNOT_ASSUME, RoleService, check_policy_shape
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ValidationError,
)
from lamina.settings import Settings
from lamina.store import MetadataStore
from lamina.store.roles import RoleStore

T = TypeVar("T")

READ = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": "*"}],
}
DENY = {"Statement": {"Effect": "Deny", "NotAction": ["logs:*"], "NotResource": "*"}}


class Inline:
    """Runs store work at once (the service's runner is the control worker in the server)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


def service(tmp_path: Path, **settings: Any) -> RoleService:
    metadata = MetadataStore.sqlite(tmp_path / "lamina.db")
    return RoleService(Settings(data_dir=tmp_path, **settings), RoleStore(metadata), Inline())


def test_policies_for_gives_a_roles_policies_and_nothing_for_an_unknown_role(
    tmp_path: Path,
) -> None:
    roles = service(tmp_path)

    async def main() -> None:
        role = await roles.put("app", [READ, DENY], "the app", "/svc/")
        assert role.arn == "arn:aws:iam::000000000000:role/svc/app"
        assert roles.policies_for(role.arn) == (READ, DENY)
        assert roles.policies_for("arn:aws:iam::000000000000:role/app") == ()  # path differs
        assert roles.policies_for("arn:aws:iam::000000000000:role/other") == ()
        assert roles.policies_for(None) == ()
        await roles.delete("app")
        assert roles.policies_for(role.arn) == ()

    asyncio.run(main())


def test_roles_persist_and_replace_keeps_the_creation_time(tmp_path: Path) -> None:
    async def main() -> None:
        first = service(tmp_path)
        made = await first.put("app", READ)
        again = await first.put("app", [DENY], "replaced")
        assert again.created == made.created
        second = service(tmp_path)
        await second.load()
        assert [r.name for r in second.roles()] == ["app"]
        assert second.policies_for(made.arn) == (DENY,)
        assert second.get("app").description == "replaced"

    asyncio.run(main())


def test_names_are_unique_without_regard_to_case(tmp_path: Path) -> None:
    roles = service(tmp_path)

    async def main() -> None:
        await roles.put("Admin", READ)
        with pytest.raises(ResourceConflictError):
            await roles.put("admin", READ)
        assert roles.get("ADMIN").name == "Admin"
        with pytest.raises(ResourceNotFoundError):
            roles.get("nobody")
        with pytest.raises(ResourceNotFoundError):
            await roles.delete("nobody")

    asyncio.run(main())


@pytest.mark.parametrize("name", ["", "has/slash", "x" * 65, "sp ace", "é"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="roleName"):
        asyncio.run(service(tmp_path).put(name, READ))


@pytest.mark.parametrize("path", ["a/b/", "/a/b", "", "/a b/"])
def test_bad_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValidationError, match="path"):
        asyncio.run(service(tmp_path).put("app", READ, None, path))


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ("not a policy", "JSON object"),
        ({"Statement": []}, "non-empty list"),
        ({"Version": "2020-01-01", "Statement": READ["Statement"]}, "Version"),
        ({"Statement": [{"Action": "*", "Resource": "*"}]}, "Effect"),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "Action and NotAction"),
        ({"Statement": [{"Effect": "Allow", "Action": "*"}]}, "Resource and NotResource"),
        ({"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}, "non-empty"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}]},
            "principal",
        ),
        ({"Statement": READ["Statement"], "Extra": 1}, "unknown member Extra"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": 1}]},
            "Condition",
        ),
    ],
)
def test_malformed_policies_are_refused(document: Any, why: str) -> None:
    with pytest.raises(InvalidParameterValueError, match=why):
        check_policy_shape(document)


def test_no_policies_or_too_large_ones_are_refused(tmp_path: Path) -> None:
    roles = service(tmp_path)
    with pytest.raises(InvalidParameterValueError, match="non-empty list"):
        asyncio.run(roles.put("app", []))
    big = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "x" * 11_000}]}
    with pytest.raises(InvalidParameterValueError, match="10240"):
        asyncio.run(roles.put("app", big))


def test_a_plugged_in_validator_refuses_with_its_message(tmp_path: Path) -> None:
    def no_star(document: PolicyDocument) -> None:
        if "*" in str(document):
            raise ValueError("wildcards are not allowed here")

    roles = service(tmp_path)
    roles.validator = no_star
    with pytest.raises(InvalidParameterValueError, match="wildcards are not allowed here"):
        asyncio.run(roles.put("app", DENY))
    asyncio.run(
        roles.put("app", {"Statement": {"Effect": "Allow", "Action": "a:b", "Resource": "r"}})
    )


def test_strict_roles_refuse_an_unknown_role(tmp_path: Path) -> None:
    lax = service(tmp_path / "lax")
    lax.check_assumable("arn:aws:iam::000000000000:role/unknown")  # accepted: grants nothing
    strict = service(tmp_path / "strict", strict_roles=True)
    with pytest.raises(InvalidParameterValueError, match=CANNOT_ASSUME):
        strict.check_assumable("arn:aws:iam::000000000000:role/unknown")
    role = asyncio.run(strict.put("known", READ))
    strict.check_assumable(role.arn)
