"""Lamina's own endpoints for brokers and secrets (`lamina brokers`, `lamina secrets`).

- `PUT /lamina/brokers/{name}` `{"Url": "amqp://user:pass@host:5672/vhost"}` registers a
  broker (or replaces its URL); `GET /lamina/brokers` lists them; `DELETE
  /lamina/brokers/{name}` removes one. A broker is answered as `{"Name", "Kind", "Arn",
  "Url", "Created"}`, `Url` without its password.
- `PUT /lamina/secrets/{name}` `{"Username", "Password"}` creates or replaces a secret; `GET
  /lamina/secrets` lists them (`{"Name", "Arn", "Username", "Created"}`: never a password);
  `DELETE /lamina/secrets/{name}` deletes one.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response
from lamina.control.brokers import BrokerService
from lamina.errors import InvalidParameterValueError, ServiceError
from lamina.mappings import Broker
from lamina.store.event_sources import StoredSecret


def _brokers(request: Request) -> BrokerService:
    brokers = app_state(request).brokers
    if brokers is None:  # only a server built without them (some unit tests)
        raise ServiceError("This server has no brokers.")
    return brokers


def _only(body: dict[str, Any], members: set[str], what: str) -> None:
    unknown = sorted(set(body) - members)
    if unknown:
        raise InvalidParameterValueError(f"A {what} has no member {', '.join(unknown)}.")


def broker_json(b: Broker) -> dict[str, Any]:
    return {
        "Name": b.name,
        "Kind": b.kind.value,
        "Arn": b.arn,
        "Url": b.display_url,
        "Created": round(b.created, 3),
    }


def secret_json(s: StoredSecret) -> dict[str, Any]:
    return {"Name": s.name, "Arn": s.arn, "Username": s.username, "Created": round(s.created, 3)}


async def put_broker(request: Request) -> Response:
    body = await json_body(request)
    _only(body, {"Url"}, "broker")
    broker = await _brokers(request).add(request.path_params["name"], body.get("Url"))
    return json_response({"Broker": broker_json(broker)})


async def list_brokers(request: Request) -> Response:
    return json_response({"Brokers": [broker_json(b) for b in _brokers(request).brokers()]})


async def remove_broker(request: Request) -> Response:
    await _brokers(request).remove(request.path_params["name"])
    return Response(status_code=204)


async def put_secret(request: Request) -> Response:
    body = await json_body(request)
    _only(body, {"Username", "Password"}, "secret")
    secret = await _brokers(request).put_secret(
        request.path_params["name"], body.get("Username"), body.get("Password")
    )
    return json_response({"Secret": secret_json(secret)})


async def list_secrets(request: Request) -> Response:
    return json_response({"Secrets": [secret_json(s) for s in _brokers(request).secrets()]})


async def delete_secret(request: Request) -> Response:
    await _brokers(request).delete_secret(request.path_params["name"])
    return Response(status_code=204)
