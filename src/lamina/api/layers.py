"""Lambda REST API: the layer operations (2018-10-31 paths). Parse, call control/, serialise."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import code_url, json_body, json_response, layer_version, layer_version_item
from lamina.control.layers import LayerInput, LayerPage, LayerService
from lamina.models import LayerVersion


def _layers(request: Request) -> LayerService:
    return app_state(request).functions.layers


def _version(request: Request, layers: LayerService, lv: LayerVersion) -> dict[str, object]:
    return layer_version(
        lv,
        layers.layer_arn(lv.name),
        layers.version_arn(lv.name, lv.version),
        code_url(request, lv.code_sha256),
    )


async def publish_layer_version(request: Request) -> Response:
    layers = _layers(request)
    body = await json_body(request)
    req = LayerInput(
        name=request.path_params["name"],
        content=body.get("Content"),
        description=body.get("Description"),
        compatible_runtimes=body.get("CompatibleRuntimes"),
        compatible_architectures=body.get("CompatibleArchitectures"),
        license_info=body.get("LicenseInfo"),
    )
    lv = await layers.publish(req)
    return json_response(_version(request, layers, lv), status=201)


async def get_layer_version(request: Request) -> Response:
    layers = _layers(request)
    lv = await layers.get(request.path_params["name"], request.path_params["version"])
    return json_response(_version(request, layers, lv))


async def list_layers(request: Request) -> Response:
    """ListLayers, and GetLayerVersionByArn, which shares its path (`?find=LayerVersion`)."""
    layers = _layers(request)
    query = request.query_params
    if query.get("find") == "LayerVersion":
        lv = await layers.get_by_arn(query.get("Arn"))
        return json_response(_version(request, layers, lv))
    page = await layers.list_layers(
        query.get("CompatibleRuntime"),
        query.get("CompatibleArchitecture"),
        query.get("Marker"),
        query.get("MaxItems"),
    )
    items: list[dict[str, object]] = [
        {
            "LayerName": lv.name,
            "LayerArn": layers.layer_arn(lv.name),
            "LatestMatchingVersion": layer_version_item(
                lv, layers.version_arn(lv.name, lv.version)
            ),
        }
        for lv in page.items
    ]
    return json_response(_page("Layers", items, page))


async def list_layer_versions(request: Request) -> Response:
    layers = _layers(request)
    query = request.query_params
    page = await layers.list_versions(
        request.path_params["name"],
        query.get("CompatibleRuntime"),
        query.get("CompatibleArchitecture"),
        query.get("Marker"),
        query.get("MaxItems"),
    )
    items: list[dict[str, object]] = [
        layer_version_item(lv, layers.version_arn(lv.name, lv.version)) for lv in page.items
    ]
    return json_response(_page("LayerVersions", items, page))


async def delete_layer_version(request: Request) -> Response:
    layers = _layers(request)
    await layers.delete(request.path_params["name"], request.path_params["version"])
    return Response(status_code=204)


def _page(member: str, items: list[dict[str, object]], page: LayerPage) -> dict[str, object]:
    out: dict[str, object] = {member: items}
    if page.next_marker:
        out["NextMarker"] = page.next_marker
    return out


async def add_layer_version_permission(request: Request) -> Response:
    body = await json_body(request)
    statement, revision = await _layers(request).policies.add(
        request.path_params["name"],
        request.path_params["version"],
        body.get("StatementId"),
        body.get("Action"),
        body.get("Principal"),
        body.get("OrganizationId"),
        request.query_params.get("RevisionId"),
    )
    return json_response(
        {"Statement": json.dumps(statement, separators=(",", ":")), "RevisionId": revision},
        status=201,
    )


async def get_layer_version_policy(request: Request) -> Response:
    text, revision = await _layers(request).policies.get(
        request.path_params["name"], request.path_params["version"]
    )
    return json_response({"Policy": text, "RevisionId": revision})


async def remove_layer_version_permission(request: Request) -> Response:
    await _layers(request).policies.remove(
        request.path_params["name"],
        request.path_params["version"],
        request.path_params["sid"],
        request.query_params.get("RevisionId"),
    )
    return Response(status_code=204)
