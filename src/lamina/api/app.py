"""The Starlette application: every HTTP surface on one port."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina import __version__
from lamina.api import (
    access_keys,
    aliases,
    brokers,
    capacity,
    cloudwatch_api,
    code_signing,
    concurrency,
    console,
    debugging,
    durable,
    event_invoke,
    event_sources,
    events_api,
    function_urls,
    http_routes,
    layers,
    logs_api,
    nodes,
    otlp,
    policies,
    resource_policies,
    roles,
    stacks,
    tags,
    websocket_apis,
    websocket_connections,
)
from lamina.api import function_settings as settings_api
from lamina.api import functions as fn
from lamina.api import images as images_api
from lamina.api.authn import Authn
from lamina.api.authz import Authorize
from lamina.api.context import AppState, app_state
from lamina.api.errors import (
    LastResort,
    error_response,
    http_error,
    lamina_error,
    unexpected_error,
)
from lamina.api.http_front import HttpFront
from lamina.api.invocations import get_invocation
from lamina.api.invoke import invoke, invoke_async
from lamina.api.invoke_stream import invoke_with_response_stream
from lamina.api.listeners import ListenerGate, Listeners
from lamina.api.schedules import schedules
from lamina.api.unserved import RefuseUnservedServices
from lamina.api.usage import usage
from lamina.api.websocket_front import WebSocketFront
from lamina.api.wire import json_response, max_items_param
from lamina.auth.keys import KeyStore
from lamina.auth.sigv4 import Verifier
from lamina.errors import LaminaError
from lamina.front.link import INVOKE_PATH
from lamina.observability.metrics import CONTENT_TYPE
from lamina.runtimes.catalog import implemented_family
from lamina.runtimes.images import debugger_state

_FN = "/2015-03-31/functions"
_LAYERS = "/2018-10-31/layers"
_LAYER_POLICY = _LAYERS + "/{name}/versions/{version}/policy"
_EVENT_INVOKE = "/2019-09-25/functions/{name}/event-invoke-config"
_URL = "/2021-10-31/functions/{name}/url"
_RUNTIME_MGMT = "/2021-07-20/functions/{name}/runtime-management-config"
_RECURSION = "/2024-08-31/functions/{name}/recursion-config"
_CP = "/2025-11-30/capacity-providers"
_SCALING = "/2025-11-30/functions/{name}/function-scaling-config"
# A runtime's ARN has slashes (`runtime/...`): the whole rest of the path.
_POLICY = "/2026-07-09/resource-policy/{arn:path}"
_CSC = "/2020-04-22/code-signing-configs"
_FN_CSC = "/2020-06-30/functions/{name}/code-signing-config"
_ESM = "/2015-03-31/event-source-mappings"


async def health(request: Request) -> Response:
    state = app_state(request)
    problems = state.problems()
    status = "starting" if not state.ready else "degraded" if problems else "ok"
    return json_response(
        {
            "status": status,
            "node": state.node_name,
            "problems": problems,
            "version": __version__,
            "sandbox": state.scheduler.backend_name,
            "sandboxDetail": state.scheduler.backend_description,
            "region": state.settings.region,
            "accountId": state.settings.account_id,
            "environments": state.scheduler.environment_count(),
            "asyncQueue": state.async_queue.summary(),
        },
        # A node that lost its database or NATS asks to be taken out of rotation.
        status=200 if status == "ok" else 503,
    )


async def runtimes(request: Request) -> Response:
    """The runtimes this server can run (Lamina's own endpoint; `lamina runtimes`): each with
    its bundled SDK's state, and the architectures the host runs."""
    state = app_state(request)
    listed = []
    for r in state.runtimes.all():
        entry: dict[str, Any] = {
            "Runtime": r.name,
            "Family": r.family.value,
            "Version": r.version,
            "Executable": r.executable,
        }
        if state.images is not None:
            sdk = state.images.status(r)
            entry["Sdk"] = {"State": sdk.state, "Detail": sdk.detail}
            debugger = debugger_state(state.images, r)
            entry["Debugger"] = {"State": debugger.state, "Detail": debugger.detail}
        listed.append(entry)
    return json_response(
        {
            "Runtimes": listed
            + [
                # Lambda runtimes Lamina implements that this host lacks (an interpreter, a
                # JDK of that release), each with what is missing.
                {
                    "Runtime": name,
                    "Family": family.value if (family := implemented_family(name)) else "",
                    "Version": "",
                    "Executable": "",
                    "Missing": why,
                }
                for name, why in state.runtimes.all_unavailable().items()
            ],
            "Architectures": [
                {"Architecture": arch, "How": how}
                for arch, how in sorted(state.runtimes.architectures.items())
            ],
        }
    )


async def environments(request: Request) -> Response:
    """The live execution environments (Lamina's own endpoint, for operators and benchmarks)."""
    return json_response(
        {
            "Environments": [
                {
                    "Id": env.id,
                    "FunctionName": env.ctx.config.name,
                    "Version": env.ctx.config.version,
                    "State": env.state.value,
                    "Pid": env.pid,
                    "LogStreamName": env.log_stream,
                    # where its debugger listens (debug mode, see docs/debugging.md), else None
                    "DebugPort": env.debug_relay.port if env.debug_relay is not None else None,
                }
                for env in app_state(request).scheduler.environments()
            ]
        }
    )


async def async_events(request: Request) -> Response:
    """The asynchronous queue: depth and oldest age per function, counts by outcome, and the
    most recent events given up with why (Lamina's own endpoint, `lamina` CLI and tests)."""
    queue = app_state(request).async_queue
    dropped = await queue.dropped(min(max(max_items_param(request) or 100, 1), 10_000))
    return json_response(
        {
            **queue.summary(),
            "droppedEvents": [
                {
                    "requestId": d.id,
                    "functionName": d.function_name,
                    "qualifier": d.qualifier,
                    "reason": d.reason,
                    "attempts": d.attempts,
                    "enqueuedAt": d.enqueued_at,
                    "droppedAt": d.dropped_at,
                    "detail": d.detail,
                }
                for d in dropped
            ],
        }
    )


async def json_protocol(request: Request) -> Response:
    """`POST /`: AWS's JSON-protocol APIs (CloudWatch Logs, EventBridge) share the root path;
    the X-Amz-Target prefix names the service. Anything not EventBridge's goes to the Logs API,
    which answers an unknown target itself."""
    if request.headers.get("x-amz-target", "").startswith(events_api.TARGET_PREFIX):
        return await events_api.dispatch(request)
    if cloudwatch_api.protocol_of(request) is not None:
        return await cloudwatch_api.dispatch(request)  # JSON 1.0 or query
    return await logs_api.dispatch(request)


async def metrics(request: Request) -> Response:
    return Response(app_state(request).metrics.render(), media_type=CONTENT_TYPE)


def build_app(
    state: AppState,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    keys: KeyStore | None = None,
    listeners: Listeners | None = None,
) -> ASGIApp:
    """The whole HTTP surface; with `keys`, every AWS-protocol request must be SigV4-signed by
    one of them (`api.authn`), else nothing is checked (`lamina serve --auth off`). With
    `listeners`, what each listener serves is enforced first (`api.listeners`)."""
    routes = [
        # Invoke itself is served by `_InvokeFirst`, in front of these.
        Route("/health", health, methods=["GET"]),
        *console.routes(),
        *durable.routes(),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/traces", otlp.receive_traces, methods=["POST"]),
        Route("/lamina/runtimes", runtimes, methods=["GET"]),
        Route("/lamina/environments", environments, methods=["GET"]),
        Route("/lamina/async", async_events, methods=["GET"]),
        Route("/lamina/usage", usage, methods=["GET"]),
        Route("/lamina/nodes", nodes.list_nodes, methods=["GET"]),
        Route("/lamina/images", images_api.list_images, methods=["GET"]),
        Route("/lamina/routes", http_routes.list_routes, methods=["GET"]),
        Route("/lamina/routes", http_routes.add_route, methods=["POST"]),
        Route("/lamina/routes", http_routes.remove_route, methods=["DELETE"]),
        Route("/lamina/schedules", schedules, methods=["GET"]),
        Route("/lamina/roles", roles.list_roles, methods=["GET"]),
        Route("/lamina/roles/{name}", roles.put_role, methods=["PUT"]),
        Route("/lamina/roles/{name}", roles.get_role, methods=["GET"]),
        Route("/lamina/roles/{name}", roles.delete_role, methods=["DELETE"]),
        Route("/lamina/stacks", stacks.list_stacks, methods=["GET"]),
        Route("/lamina/stacks/{name}", stacks.put_stack, methods=["PUT"]),
        Route("/lamina/stacks/{name}", stacks.get_stack, methods=["GET"]),
        Route("/lamina/stacks/{name}", stacks.delete_stack, methods=["DELETE"]),
        Route("/lamina/brokers", brokers.list_brokers, methods=["GET"]),
        Route("/lamina/brokers/{name}", brokers.put_broker, methods=["PUT"]),
        Route("/lamina/brokers/{name}", brokers.remove_broker, methods=["DELETE"]),
        Route("/lamina/secrets", brokers.list_secrets, methods=["GET"]),
        Route("/lamina/secrets/{name:path}", brokers.put_secret, methods=["PUT"]),
        Route("/lamina/secrets/{name:path}", brokers.delete_secret, methods=["DELETE"]),
        Route("/lamina/sources", event_sources.list_sources, methods=["GET"]),
        Route("/lamina/keys", access_keys.list_keys, methods=["GET"]),
        Route("/lamina/keys", access_keys.create_key, methods=["POST"]),
        Route("/lamina/keys/{key_id}", access_keys.delete_key, methods=["DELETE"]),
        Route("/lamina/keys/{key_id}/policies", access_keys.attach_policy, methods=["POST"]),
        Route("/lamina/functions/{name}/debug", debugging.start_debug, methods=["POST"]),
        Route("/lamina/functions/{name}/debug/{session}", debugging.end_debug, methods=["DELETE"]),
        Route("/lamina/invocations/{request_id}", get_invocation, methods=["GET"]),
        Route("/2014-11-13/functions/{name}/invoke-async/", invoke_async, methods=["POST"]),
        Route("/2014-11-13/functions/{name}/invoke-async", invoke_async, methods=["POST"]),
        Route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            invoke_with_response_stream,
            methods=["POST"],
        ),
        Route(_ESM, event_sources.list_event_source_mappings, methods=["GET"]),
        Route(_ESM + "/", event_sources.list_event_source_mappings, methods=["GET"]),
        Route(_ESM, event_sources.create_event_source_mapping, methods=["POST"]),
        Route(_ESM + "/", event_sources.create_event_source_mapping, methods=["POST"]),
        Route(_ESM + "/{uuid}", event_sources.get_event_source_mapping, methods=["GET"]),
        Route(_ESM + "/{uuid}", event_sources.update_event_source_mapping, methods=["PUT"]),
        Route(_ESM + "/{uuid}", event_sources.delete_event_source_mapping, methods=["DELETE"]),
        Route(_FN, fn.list_functions, methods=["GET"]),
        Route(_FN + "/", fn.list_functions, methods=["GET"]),
        Route(_FN, fn.create_function, methods=["POST"]),
        Route(_FN + "/", fn.create_function, methods=["POST"]),
        Route(_FN + "/{name}", fn.get_function, methods=["GET"]),
        Route(_FN + "/{name}", fn.delete_function, methods=["DELETE"]),
        Route(_FN + "/{name}/configuration", fn.get_function_configuration, methods=["GET"]),
        Route(_FN + "/{name}/configuration", fn.update_function_configuration, methods=["PUT"]),
        Route(_FN + "/{name}/code", fn.update_function_code, methods=["PUT"]),
        Route(_FN + "/{name}/versions", fn.publish_version, methods=["POST"]),
        Route(_FN + "/{name}/versions", fn.list_versions, methods=["GET"]),
        Route(
            "/2017-10-31/functions/{name}/concurrency",
            concurrency.put_function_concurrency,
            methods=["PUT"],
        ),
        Route(
            "/2017-10-31/functions/{name}/concurrency",
            concurrency.delete_function_concurrency,
            methods=["DELETE"],
        ),
        Route(
            "/2019-09-30/functions/{name}/concurrency",
            concurrency.get_function_concurrency,
            methods=["GET"],
        ),
        Route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            concurrency.put_provisioned_concurrency,
            methods=["PUT"],
        ),
        Route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            concurrency.get_provisioned_concurrency,
            methods=["GET"],
        ),
        Route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            concurrency.delete_provisioned_concurrency,
            methods=["DELETE"],
        ),
        Route(_EVENT_INVOKE, event_invoke.put_event_invoke_config, methods=["PUT"]),
        Route(_EVENT_INVOKE, event_invoke.update_event_invoke_config, methods=["POST"]),
        Route(_EVENT_INVOKE, event_invoke.get_event_invoke_config, methods=["GET"]),
        Route(_EVENT_INVOKE, event_invoke.delete_event_invoke_config, methods=["DELETE"]),
        Route(_EVENT_INVOKE + "/list", event_invoke.list_event_invoke_configs, methods=["GET"]),
        Route(_URL, function_urls.create_function_url_config, methods=["POST"]),
        Route(_URL, function_urls.get_function_url_config, methods=["GET"]),
        Route(_URL, function_urls.update_function_url_config, methods=["PUT"]),
        Route(_URL, function_urls.delete_function_url_config, methods=["DELETE"]),
        Route(_URL + "s", function_urls.list_function_url_configs, methods=["GET"]),
        Route("/2016-08-19/account-settings/", concurrency.get_account_settings, methods=["GET"]),
        Route("/2016-08-19/account-settings", concurrency.get_account_settings, methods=["GET"]),
        Route(_FN + "/{name}/policy", policies.add_permission, methods=["POST"]),
        Route(_FN + "/{name}/policy", policies.get_policy, methods=["GET"]),
        Route(_FN + "/{name}/policy/{sid}", policies.remove_permission, methods=["DELETE"]),
        Route(_FN + "/{name}/aliases", aliases.create_alias, methods=["POST"]),
        Route(_FN + "/{name}/aliases", aliases.list_aliases, methods=["GET"]),
        Route(_FN + "/{name}/aliases/{alias}", aliases.get_alias, methods=["GET"]),
        Route(_FN + "/{name}/aliases/{alias}", aliases.update_alias, methods=["PUT"]),
        Route(_FN + "/{name}/aliases/{alias}", aliases.delete_alias, methods=["DELETE"]),
        # ListLayers and GetLayerVersionByArn (?find=LayerVersion) share a path.
        Route(_LAYERS, layers.list_layers, methods=["GET"]),
        Route(_LAYERS + "/", layers.list_layers, methods=["GET"]),
        Route(_LAYERS + "/{name}/versions", layers.list_layer_versions, methods=["GET"]),
        Route(_LAYERS + "/{name}/versions", layers.publish_layer_version, methods=["POST"]),
        Route(_LAYERS + "/{name}/versions/{version}", layers.get_layer_version, methods=["GET"]),
        Route(
            _LAYERS + "/{name}/versions/{version}", layers.delete_layer_version, methods=["DELETE"]
        ),
        Route(_RUNTIME_MGMT, settings_api.get_runtime_management_config, methods=["GET"]),
        Route(_RUNTIME_MGMT, settings_api.put_runtime_management_config, methods=["PUT"]),
        Route(_RECURSION, settings_api.get_function_recursion_config, methods=["GET"]),
        Route(_RECURSION, settings_api.put_function_recursion_config, methods=["PUT"]),
        Route(_CP, capacity.list_capacity_providers, methods=["GET"]),
        Route(_CP, capacity.create_capacity_provider, methods=["POST"]),
        Route(_CP + "/{name}", capacity.get_capacity_provider, methods=["GET"]),
        Route(_CP + "/{name}", capacity.update_capacity_provider, methods=["PUT"]),
        Route(_CP + "/{name}", capacity.delete_capacity_provider, methods=["DELETE"]),
        Route(
            _CP + "/{name}/function-versions",
            capacity.list_function_versions_by_capacity_provider,
            methods=["GET"],
        ),
        Route(_SCALING, capacity.get_function_scaling_config, methods=["GET"]),
        Route(_SCALING, capacity.put_function_scaling_config, methods=["PUT"]),
        Route("/2017-03-31/tags/{arn}", tags.tag_resource, methods=["POST"]),
        Route("/2017-03-31/tags/{arn}", tags.untag_resource, methods=["DELETE"]),
        Route("/2017-03-31/tags/{arn}", tags.list_tags, methods=["GET"]),
        Route(_POLICY, resource_policies.get_resource_policy, methods=["GET"]),
        Route(_POLICY, resource_policies.put_resource_policy, methods=["PUT"]),
        Route(_POLICY, resource_policies.delete_resource_policy, methods=["DELETE"]),
        Route(_LAYER_POLICY, layers.add_layer_version_permission, methods=["POST"]),
        Route(_LAYER_POLICY, layers.get_layer_version_policy, methods=["GET"]),
        Route(_LAYER_POLICY + "/{sid}", layers.remove_layer_version_permission, methods=["DELETE"]),
        Route(_CSC, code_signing.create_code_signing_config, methods=["POST"]),
        Route(_CSC, code_signing.list_code_signing_configs, methods=["GET"]),
        Route(_CSC + "/", code_signing.list_code_signing_configs, methods=["GET"]),
        Route(_CSC + "/{arn}", code_signing.get_code_signing_config, methods=["GET"]),
        Route(_CSC + "/{arn}", code_signing.update_code_signing_config, methods=["PUT"]),
        Route(_CSC + "/{arn}", code_signing.delete_code_signing_config, methods=["DELETE"]),
        Route(
            _CSC + "/{arn}/functions",
            code_signing.list_functions_by_code_signing_config,
            methods=["GET"],
        ),
        Route(_FN_CSC, code_signing.put_function_code_signing_config, methods=["PUT"]),
        Route(_FN_CSC, code_signing.get_function_code_signing_config, methods=["GET"]),
        Route(_FN_CSC, code_signing.delete_function_code_signing_config, methods=["DELETE"]),
        Route("/lamina/signers", code_signing.list_signers, methods=["GET"]),
        Route("/lamina/signers", code_signing.put_signer, methods=["PUT"]),
        Route("/lamina/signers", code_signing.remove_signer, methods=["DELETE"]),
        Route("/lamina/signers/revoke", code_signing.revoke_signer, methods=["POST"]),
        Route("/lamina/code/{sha256}.zip", fn.download_code, methods=["GET"]),
        Route("/", json_protocol, methods=["POST"]),
        Route(
            cloudwatch_api.CBOR_PATH + "{operation}",
            cloudwatch_api.dispatch,
            methods=["POST"],
        ),
        *_websocket_routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            LaminaError: lamina_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.lamina = state
    # Function URLs and HTTP routes take any method and path, so they go first; they have
    # their own rules (a URL's AuthType and resource policy), so they skip `Authorize`, which
    # checks every API request, Invoke included, against the caller's policies.
    route_front = http_routes.RouteFront(state) if state.http_routes is not None else None
    inner = Authorize(_InvokeFirst(app), state)
    if state.websocket_connections is not None:
        inner.access.locate_connection = state.websocket_connections.locate
    state.authorize = inner
    outer: ASGIApp
    if keys is None:
        front = HttpFront(inner, state, route_front)
        outer = front
    else:
        verifier = Verifier(keys, state.settings.region)
        front = HttpFront(inner, state, route_front, verifier)
        outer = Authn(front, keys, verifier, front.target, state.console)
    # Requests for AWS services Lamina does not serve are refused first (`api.unserved`),
    # after the listener gate (what a sandbox's connection may reach at all).
    outer = RefuseUnservedServices(outer)
    if listeners is not None:
        outer = ListenerGate(outer, listeners, front.target)
    if state.websockets is not None and state.websocket_connections is not None:
        # WebSocket connections (`websocket` scopes only) to WebSocket APIs.
        outer = WebSocketFront(
            outer,
            state,
            state.websockets,
            state.websocket_connections,
            listeners.metrics_port if listeners is not None else None,
        )
    # Outermost: whatever escapes is still answered, and the connection stays usable.
    return LastResort(outer)


class _InvokeFirst:
    """Invoke, the hot path, served ahead of Starlette's middleware and router: the same
    handler and the same error responses, without the per-request layers that cost more than
    an asynchronous invoke's own work. Every other request goes to the Starlette app."""

    _PATH = INVOKE_PATH

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = self._PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        scope["path_params"] = {"name": match[1]}
        request = Request(scope, receive)
        try:
            response = await invoke(request)
        except LaminaError as e:
            response = error_response(e)
        except Exception as e:  # as Starlette's handler for Exception would answer
            response = await unexpected_error(request, e)
        await response(scope, receive, send)


_V2 = "/v2/apis"
_MANAGE = "/@connections/{connection_id}"
_STAGE_MANAGE = "/ws/{api_id}/{stage}" + _MANAGE


def _websocket_routes() -> list[Route]:
    """apigatewayv2 (WebSocket APIs) and the `@connections` management API."""
    ws = websocket_apis
    wc = websocket_connections
    return [
        Route(_V2, ws.get_apis, methods=["GET"]),
        Route(_V2, ws.create_api, methods=["POST"]),
        Route(_V2 + "/{api_id}", ws.get_api, methods=["GET"]),
        Route(_V2 + "/{api_id}", ws.update_api, methods=["PATCH"]),
        Route(_V2 + "/{api_id}", ws.delete_api, methods=["DELETE"]),
        Route(_V2 + "/{api_id}/routes", ws.get_routes, methods=["GET"]),
        Route(_V2 + "/{api_id}/routes", ws.create_route, methods=["POST"]),
        Route(_V2 + "/{api_id}/routes/{route_id}", ws.get_route, methods=["GET"]),
        Route(_V2 + "/{api_id}/routes/{route_id}", ws.update_route, methods=["PATCH"]),
        Route(_V2 + "/{api_id}/routes/{route_id}", ws.delete_route, methods=["DELETE"]),
        Route(
            _V2 + "/{api_id}/routes/{route_id}/routeresponses",
            ws.create_route_response,
            methods=["POST"],
        ),
        Route(_V2 + "/{api_id}/integrations", ws.get_integrations, methods=["GET"]),
        Route(_V2 + "/{api_id}/integrations", ws.create_integration, methods=["POST"]),
        Route(_V2 + "/{api_id}/integrations/{integration_id}", ws.get_integration, methods=["GET"]),
        Route(
            _V2 + "/{api_id}/integrations/{integration_id}",
            ws.delete_integration,
            methods=["DELETE"],
        ),
        Route(
            _V2 + "/{api_id}/integrations/{integration_id}",
            ws.update_integration,
            methods=["PATCH"],
        ),
        Route(_V2 + "/{api_id}/stages/{stage}", ws.update_stage, methods=["PATCH"]),
        Route(_V2 + "/{api_id}/stages", ws.get_stages, methods=["GET"]),
        Route(_V2 + "/{api_id}/stages", ws.create_stage, methods=["POST"]),
        Route(_V2 + "/{api_id}/stages/{stage}", ws.get_stage, methods=["GET"]),
        Route(_V2 + "/{api_id}/stages/{stage}", ws.delete_stage, methods=["DELETE"]),
        Route("/lamina/websockets/connections", wc.list_connections, methods=["GET"]),
        *[
            Route(path, handler, methods=[method])
            for path in (_MANAGE, _STAGE_MANAGE)
            for method, handler in (
                ("POST", wc.post_to_connection),
                ("GET", wc.get_connection),
                ("DELETE", wc.delete_connection),
            )
        ],
    ]
