"""Lambda REST API (2017-03-31): tags by resource ARN (TagResource, UntagResource, ListTags).
Parse, call control/, serialise."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response


async def tag_resource(request: Request) -> Response:
    body = await json_body(request)
    await app_state(request).functions.tags.tag(request.path_params["arn"], body.get("Tags"))
    return Response(status_code=204)


async def untag_resource(request: Request) -> Response:
    # `tagKeys` repeats once per key; absent means none were named (a validation error).
    keys = request.query_params.getlist("tagKeys") if "tagKeys" in request.query_params else None
    await app_state(request).functions.tags.untag(request.path_params["arn"], keys)
    return Response(status_code=204)


async def list_tags(request: Request) -> Response:
    tags = await app_state(request).functions.tags.list(request.path_params["arn"])
    return json_response({"Tags": tags})
