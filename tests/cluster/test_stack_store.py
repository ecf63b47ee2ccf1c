"""Stack records (`store/stacks.py`) behave the same on SQLite and PostgreSQL, on a database
`open_database` made at head (so the `stacks` table comes with migration 0005)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lamina.models import Stack
from lamina.store.engine import open_database
from lamina.store.stacks import StackStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lamina.db'}"
    url: str = request.getfixturevalue("database_url")
    return url


def _stack(name: str, status: str = "CREATE_COMPLETE", at: datetime = NOW) -> Stack:
    return Stack(
        name=name,
        template_path="/apps/app/template.yaml",
        parameters={"Stage": "dev"},
        resources={
            "Fn": {
                "type": "AWS::Lambda::Function",
                "physical_ref": f"{name}-Fn",
                "attributes": {"Arn": f"arn:aws:lambda:us-east-1:000000000000:function:{name}-Fn"},
                "properties": {"Environment": {"Variables": {"K": "v é"}}, "Timeout": 3},
                "properties_digest": "d",
                "status": "CREATE_COMPLETE",
                "deletion_policy": "Delete",
            }
        },
        outputs={"List": ["a", "b"], "Text": "x"},
        status=status,
        created=NOW,
        updated=at,
    )


def test_put_get_replace_list_delete(db_url: str) -> None:
    engine = open_database(db_url, cluster=db_url.startswith("postgresql"))
    try:
        store = StackStore(engine)
        assert store.get("app") is None and store.all() == []
        store.put(_stack("app"))
        store.put(_stack("other"))
        assert store.get("app") == _stack("app")
        later = _stack("app", "UPDATE_COMPLETE", NOW + timedelta(minutes=5))
        store.put(later)
        assert store.get("app") == later
        assert [s.name for s in store.all()] == ["app", "other"]
        assert store.delete("app") and not store.delete("app")
        assert [s.name for s in store.all()] == ["other"]
    finally:
        engine.dispose()
