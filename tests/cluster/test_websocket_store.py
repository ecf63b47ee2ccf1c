"""WebSocket APIs in the store, on SQLite and PostgreSQL alike: what one node writes, another
node (another `WebSocketApis` on the same database) serves at once; a refused change writes
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from lamina.control.websocket_apis import WebSocketApis
from lamina.errors import BadRequestError, ConflictError, NotFoundError
from lamina.store.engine import open_database
from lamina.store.websocket_apis import WebSocketApiStore

FN = "arn:aws:lambda:us-east-1:000000000000:function:chat:live"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lamina.db'}"
    else:
        url = request.getfixturevalue("database_url")
    opened = open_database(url, cluster=False)
    yield opened
    opened.dispose()


def _node(engine: Engine) -> WebSocketApis:
    return WebSocketApis(
        WebSocketApiStore(engine), "us-east-1", "000000000000", "http://127.0.0.1:8484"
    )


def test_an_api_written_by_one_node_is_served_by_another(engine: Engine) -> None:
    async def scenario() -> None:
        one, two = _node(engine), _node(engine)
        api = await one.create_api(
            {
                "Name": "chat",
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": "$request.body.action",
            }
        )
        api_id = api["ApiId"]
        assert api["ApiEndpoint"] == f"ws://127.0.0.1:8484/ws/{api_id}"
        integration = await one.create_integration(
            api_id, {"IntegrationType": "AWS_PROXY", "IntegrationUri": FN}
        )
        target = f"integrations/{integration['IntegrationId']}"
        await one.create_route(api_id, {"RouteKey": "sendmessage", "Target": target})
        await one.create_stage(api_id, {"StageName": "prod"})

        live = await two.live(api_id)
        assert live is not None
        assert live.stages == {"prod"}
        assert live.selection == (("action",),)
        route = live.routes["sendmessage"]
        assert route.function is not None
        assert (route.function.name, route.function.qualifier) == ("chat", "live")
        assert not route.two_way

        # a refused change leaves the stored document as it was
        with pytest.raises(ConflictError):
            await two.create_route(api_id, {"RouteKey": "sendmessage", "Target": target})
        with pytest.raises(BadRequestError):
            await two.create_route(api_id, {"RouteKey": "other", "Target": "integrations/x"})
        assert [r["RouteKey"] for r in await one.get_routes(api_id)] == ["sendmessage"]

        await two.delete_api(api_id)
        assert await one.live(api_id) is None
        with pytest.raises(NotFoundError):
            await one.get_api(api_id)

    asyncio.run(scenario())
