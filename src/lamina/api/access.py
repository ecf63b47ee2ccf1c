"""What each API request asks to do, in IAM's terms: the action and the resource ARN.

`AccessMap.request` names the `AccessRequest` of every operation Lamina serves, as AWS's
service authorization reference names them:

- Lambda: `lambda:<Operation>` (Invoke and InvokeAsync are both `lambda:InvokeFunction`, the
  permission Lambda checks for them). Function operations
  act on the function ARN, qualified when the request names a version or alias (a `Qualifier`
  parameter, or a qualified name or ARN in the path); operations on the function as a whole
  (updates, publishing, aliases, reserved concurrency, listings of its sub-resources) act on the
  unqualified ARN. IAM matches ARNs as strings, so a policy on `function:NAME` does not cover
  `function:NAME:prod`: policies use `function:NAME:*` for versions and aliases, as on AWS.
- Tags and whole resource policies: the ARN the request names (TagResource, UntagResource,
  ListTags, Get/Put/DeleteResourcePolicy).
- Event-source mappings: `event-source-mapping:UUID` for Get/Update/Delete; Create and List
  act on `*` (Create with `lambda:FunctionArn`, the function it names, as a condition key).
- Layers: `layer:NAME` for PublishLayerVersion, `layer:NAME:VERSION` for a version's operations.
- CloudWatch Logs: `log-group:NAME:*` (a stream's operations: `log-group:NAME:log-stream:S`);
  DescribeLogGroups acts on `log-group:*`.
- EventBridge: `rule/NAME` (default bus), PutEvents on `event-bus/default`, listings on `*`.
- Lamina's own `/lamina/...` endpoints: `lamina:<Name>` on `*`; debug sessions
  (`/lamina/functions/NAME/debug[/SESSION]`) are `lamina:DebugFunction` on the function's ARN
  (qualified by the `Qualifier` parameter, if given); an invocation record
  (`GET /lamina/invocations/ID`) is `lamina:GetInvocation` on the function's ARN, checked by
  its handler once the record says which function it is.

`/health`, `/metrics`, code downloads (`/lamina/code/...`, the Location GetFunction hands
out, which stands in for S3's pre-signed URL) and `POST /v1/traces` (functions' own OTLP
spans, which carry a per-function token its handler checks, `api.otlp`) are open: `request`
returns None for them. So are the web console's paths (`api.console`): its page and assets
hold no data; signing in and reading or ending a session need only a key (any key may);
and `/console/api/functions` asks no action of its own: it lists only the functions on
which the caller may `lambda:GetFunctionConfiguration`, checked by its handler for each. A
path no rule knows gets `lamina:UnknownOperation` on `*`, so that only the admin reaches the
router's 404: authorization fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from lamina import untrusted_json
from lamina.api.authn import is_console_path
from lamina.api.cloudwatch_wire import action as cloudwatch_action
from lamina.api.cloudwatch_wire import protocol_of as cloudwatch_protocol
from lamina.api.events_api import TARGET_PREFIX as EVENTS_PREFIX
from lamina.api.logs_api import TARGET_PREFIX as LOGS_PREFIX
from lamina.arns import function_arn, parse_function_ref
from lamina.auth.principal import AccessRequest
from lamina.errors import LaminaError

UNKNOWN = "lamina:UnknownOperation"
_OPEN_PATHS = frozenset({"/health", "/metrics", "/v1/traces"})
_CODE = re.compile(r"/lamina/code/[^/]+\.zip")
# /<api-version>/functions/<name>[/<rest>]
_FUNCTION = re.compile(
    r"/(2015-03-31|2014-11-13|2017-10-31|2019-09-30|2019-09-25|2021-10-31|2020-06-30|"
    r"2021-07-20|2024-08-31|2025-11-30|2021-11-15)/functions"
    r"(?:/([^/]+)(/.*)?)?"
)
# Durable executions (2025-12-01): an execution's ARN has slashes of its own.
_DURABLE = re.compile(
    r"/2025-12-01/durable-executions/(.+?)(/checkpoint|/state|/history|/stop|/pause|/resume)?"
)
_DURABLE_OPS = {
    ("POST", "/checkpoint"): "CheckpointDurableExecution",
    ("GET", "/state"): "GetDurableExecutionState",
    ("GET", "/history"): "GetDurableExecutionHistory",
    ("POST", "/stop"): "StopDurableExecution",
    ("POST", "/pause"): "PauseDurableExecution",
    ("POST", "/resume"): "ResumeDurableExecution",
    ("GET", ""): "GetDurableExecution",
    ("DELETE", ""): "DeleteDurableExecution",
}
_DURABLE_CALLBACK = re.compile(
    r"/2025-12-01/durable-execution-callbacks/(.+)/(succeed|fail|heartbeat)"
)
_CALLBACK_OPS = {
    "succeed": "SendDurableExecutionCallbackSuccess",
    "fail": "SendDurableExecutionCallbackFailure",
    "heartbeat": "SendDurableExecutionCallbackHeartbeat",
}
_DURABLE_LIST = re.compile(r"/2025-12-01/functions/([^/]+)/durable-executions")
_CAPACITY = re.compile(r"/2025-11-30/capacity-providers(?:/([^/]+)(/function-versions)?)?")
_CAPACITY_OPS = {
    ("GET", False, False): "ListCapacityProviders",
    ("POST", False, False): "CreateCapacityProvider",
    ("GET", True, False): "GetCapacityProvider",
    ("PUT", True, False): "UpdateCapacityProvider",
    ("DELETE", True, False): "DeleteCapacityProvider",
    ("GET", True, True): "ListFunctionVersionsByCapacityProvider",
}
_ESM = re.compile(r"/2015-03-31/event-source-mappings(?:/([^/]+))?")
_ESM_OPS = {
    ("GET", False): "ListEventSourceMappings",
    ("POST", False): "CreateEventSourceMapping",
    ("GET", True): "GetEventSourceMapping",
    ("PUT", True): "UpdateEventSourceMapping",
    ("DELETE", True): "DeleteEventSourceMapping",
}
_LAYERS = re.compile(r"/2018-10-31/layers(?:/([^/]+)/versions(?:/([^/]+)(/policy(?:/[^/]+)?)?)?)?")
# A layer version's policy: (method, with a statement id?) -> operation
_LAYER_POLICY_OPS = {
    ("POST", False): "AddLayerVersionPermission",
    ("GET", False): "GetLayerVersionPolicy",
    ("DELETE", True): "RemoveLayerVersionPermission",
}
# Tags are addressed by the resource's ARN, which is the resource IAM checks.
_TAGS = re.compile(r"/2017-03-31/tags/([^/]+)")
_TAG_OPS = {"POST": "TagResource", "DELETE": "UntagResource", "GET": "ListTags"}
_RESOURCE_POLICY = re.compile(r"/2026-07-09/resource-policy/(.+)")
_RESOURCE_POLICY_OPS = {
    "GET": "GetResourcePolicy",
    "PUT": "PutResourcePolicy",
    "DELETE": "DeleteResourcePolicy",
}
# /2020-04-22/code-signing-configs[/<arn>[/functions]]
_CSC = re.compile(r"/2020-04-22/code-signing-configs(?:/([^/]+)(/functions)?)?")
_CSC_OPS = {
    "GET": "GetCodeSigningConfig",
    "PUT": "UpdateCodeSigningConfig",
    "DELETE": "DeleteCodeSigningConfig",
}
_LAMINA = {
    ("GET", "/lamina/runtimes"): "ListRuntimes",
    ("GET", "/lamina/environments"): "ListEnvironments",
    ("GET", "/lamina/async"): "GetAsyncQueue",
    ("GET", "/lamina/usage"): "GetUsage",
    ("GET", "/lamina/nodes"): "ListNodes",
    ("GET", "/lamina/images"): "ListImages",
    ("GET", "/lamina/routes"): "ListRoutes",
    ("POST", "/lamina/routes"): "AddRoute",
    ("DELETE", "/lamina/routes"): "RemoveRoute",
    ("GET", "/lamina/schedules"): "ListSchedules",
    ("GET", "/lamina/roles"): "ListRoles",
    ("GET", "/lamina/stacks"): "ListStacks",
    ("GET", "/lamina/brokers"): "ListBrokers",
    ("GET", "/lamina/secrets"): "ListSecrets",
    ("GET", "/lamina/sources"): "ListSources",
    ("GET", "/lamina/keys"): "ListKeys",
    ("POST", "/lamina/keys"): "CreateKey",
    ("GET", "/lamina/signers"): "ListSigners",
    ("PUT", "/lamina/signers"): "PutSigner",
    ("DELETE", "/lamina/signers"): "RemoveSigner",
    ("POST", "/lamina/signers/revoke"): "RevokeSigner",
    ("GET", "/lamina/websockets/connections"): "ListWebSocketConnections",
}
#: /lamina/roles/<name>: (method) -> operation
#: the `@connections` API: `[/ws/<apiId>/<stage>]/@connections/<id>`
_MANAGE = re.compile(r"(?:/ws/([^/]+)/([^/]+))?/@connections/([^/]+)")
_LAMINA_ROLE = re.compile(r"/lamina/roles/[^/]+")
#: /lamina/functions/<name>/debug[/<session>]: lamina:DebugFunction on the function's ARN
_LAMINA_DEBUG = re.compile(r"/lamina/functions/([^/]+)/debug(?:/[^/]+)?")
_ROLE_OPS = {"PUT": "PutRole", "GET": "GetRole", "DELETE": "DeleteRole"}
_LAMINA_STACK = re.compile(r"/lamina/stacks/[^/]+")
_STACK_OPS = {"PUT": "PutStack", "GET": "GetStack", "DELETE": "DeleteStack"}
#: /lamina/brokers/<name> and /lamina/secrets/<name>: (method) -> operation
_LAMINA_BROKER = re.compile(r"/lamina/brokers/[^/]+")
_BROKER_OPS = {"PUT": "AddBroker", "DELETE": "RemoveBroker"}
_LAMINA_SECRET = re.compile(r"/lamina/secrets/.+")
_SECRET_OPS = {"PUT": "PutSecret", "DELETE": "DeleteSecret"}
#: /lamina/keys/<id> and /lamina/keys/<id>/policies (admin-only in their handlers as well)
_LAMINA_KEY = re.compile(r"/lamina/keys/[^/]+")
_LAMINA_KEY_POLICIES = re.compile(r"/lamina/keys/[^/]+/policies")
#: /lamina/invocations/<request-id>: `lamina:GetInvocation` on the function the record names,
#: which only the record knows: its handler (`api.invocations`) checks it after the lookup
_LAMINA_INVOCATION = re.compile(r"/lamina/invocations/[^/]+")
# (API version, the path after the function name, method) -> (operation, qualified?)
_FUNCTION_OPS: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("2015-03-31", "", "GET"): ("GetFunction", True),
    ("2015-03-31", "", "DELETE"): ("DeleteFunction", True),
    ("2015-03-31", "/configuration", "GET"): ("GetFunctionConfiguration", True),
    ("2015-03-31", "/configuration", "PUT"): ("UpdateFunctionConfiguration", False),
    ("2015-03-31", "/code", "PUT"): ("UpdateFunctionCode", False),
    ("2015-03-31", "/versions", "POST"): ("PublishVersion", False),
    ("2015-03-31", "/versions", "GET"): ("ListVersionsByFunction", False),
    ("2015-03-31", "/invocations", "POST"): ("InvokeFunction", True),
    ("2015-03-31", "/policy", "POST"): ("AddPermission", True),
    ("2015-03-31", "/policy", "GET"): ("GetPolicy", True),
    ("2015-03-31", "/policy/*", "DELETE"): ("RemovePermission", True),
    ("2015-03-31", "/aliases", "POST"): ("CreateAlias", False),
    ("2015-03-31", "/aliases", "GET"): ("ListAliases", False),
    ("2015-03-31", "/aliases/*", "GET"): ("GetAlias", False),
    ("2015-03-31", "/aliases/*", "PUT"): ("UpdateAlias", False),
    ("2015-03-31", "/aliases/*", "DELETE"): ("DeleteAlias", False),
    ("2014-11-13", "/invoke-async", "POST"): ("InvokeFunction", True),
    # InvokeWithResponseStream is authorized as lambda:InvokeFunction, as on AWS
    ("2021-11-15", "/response-streaming-invocations", "POST"): ("InvokeFunction", True),
    ("2017-10-31", "/concurrency", "PUT"): ("PutFunctionConcurrency", False),
    ("2017-10-31", "/concurrency", "DELETE"): ("DeleteFunctionConcurrency", False),
    ("2019-09-30", "/concurrency", "GET"): ("GetFunctionConcurrency", False),
    ("2019-09-30", "/provisioned-concurrency", "PUT"): ("PutProvisionedConcurrencyConfig", True),
    ("2019-09-30", "/provisioned-concurrency", "GET"): ("GetProvisionedConcurrencyConfig", True),
    ("2019-09-30", "/provisioned-concurrency", "DELETE"): (
        "DeleteProvisionedConcurrencyConfig",
        True,
    ),
    ("2019-09-25", "/event-invoke-config", "PUT"): ("PutFunctionEventInvokeConfig", True),
    ("2019-09-25", "/event-invoke-config", "POST"): ("UpdateFunctionEventInvokeConfig", True),
    ("2019-09-25", "/event-invoke-config", "GET"): ("GetFunctionEventInvokeConfig", True),
    ("2019-09-25", "/event-invoke-config", "DELETE"): ("DeleteFunctionEventInvokeConfig", True),
    ("2019-09-25", "/event-invoke-config/list", "GET"): (
        "ListFunctionEventInvokeConfigs",
        False,
    ),
    ("2021-10-31", "/url", "POST"): ("CreateFunctionUrlConfig", True),
    ("2021-10-31", "/url", "GET"): ("GetFunctionUrlConfig", True),
    ("2021-10-31", "/url", "PUT"): ("UpdateFunctionUrlConfig", True),
    ("2021-10-31", "/url", "DELETE"): ("DeleteFunctionUrlConfig", True),
    ("2021-10-31", "/urls", "GET"): ("ListFunctionUrlConfigs", False),
    ("2021-07-20", "/runtime-management-config", "GET"): ("GetRuntimeManagementConfig", True),
    ("2021-07-20", "/runtime-management-config", "PUT"): ("PutRuntimeManagementConfig", True),
    ("2024-08-31", "/recursion-config", "GET"): ("GetFunctionRecursionConfig", False),
    ("2024-08-31", "/recursion-config", "PUT"): ("PutFunctionRecursionConfig", False),
    ("2025-11-30", "/function-scaling-config", "GET"): ("GetFunctionScalingConfig", True),
    ("2025-11-30", "/function-scaling-config", "PUT"): ("PutFunctionScalingConfig", True),
    ("2020-06-30", "/code-signing-config", "PUT"): ("PutFunctionCodeSigningConfig", False),
    ("2020-06-30", "/code-signing-config", "GET"): ("GetFunctionCodeSigningConfig", False),
    ("2020-06-30", "/code-signing-config", "DELETE"): ("DeleteFunctionCodeSigningConfig", False),
}
# Operations whose body carries a condition key or the resource's name.
_BODY_OPS = frozenset(
    {
        "AddPermission",
        "CreateFunctionUrlConfig",
        "UpdateFunctionUrlConfig",
        # for the layers it attaches (`attached_layers`)
        "UpdateFunctionConfiguration",
    }
)
# Operations that attach layers, for which the caller needs lambda:GetLayerVersion on each
_LAYER_USERS = frozenset({"lambda:CreateFunction", "lambda:UpdateFunctionConfiguration"})
# Logs operations that name a stream as well as a group
_STREAM_OPS = frozenset({"GetLogEvents", "PutLogEvents"})
_RULE_MEMBER = {
    "PutRule": "Name",
    "DescribeRule": "Name",
    "DeleteRule": "Name",
    "EnableRule": "Name",
    "DisableRule": "Name",
    "PutTargets": "Rule",
    "RemoveTargets": "Rule",
    "ListTargetsByRule": "Rule",
}


class AccessMap:
    """Names requests' actions and resources for one server's region and account."""

    def __init__(self, region: str, account: str) -> None:
        self.region = region
        self.account = account
        #: a live WebSocket connection's (api id, stage), for the management API's short
        #: path `/@connections/<id>` (set by the server; None: not known)
        self.locate_connection: Callable[[str], tuple[str, str] | None] = lambda _: None

    def needs_body(self, method: str, path: str) -> bool:
        """Whether `request` needs the body to name this request (the JSON APIs on `POST /`,
        CreateFunction, and the operations whose body holds a condition key)."""
        if method != "POST" and method != "PUT":
            return False
        if path == "/":
            return True
        if method == "POST" and path.rstrip("/") == "/2015-03-31/event-source-mappings":
            return True  # CreateEventSourceMapping's function is a condition key
        if method == "POST" and path.rstrip("/") == "/2025-11-30/capacity-providers":
            return True  # CreateCapacityProvider names its provider in the body
        m = _FUNCTION.fullmatch(path.rstrip("/") or "/")
        if m is None:
            return False
        if m[2] is None:
            return method == "POST"  # CreateFunction names its function in the body
        op = _FUNCTION_OPS.get((m[1], _shape(m[3]), method))
        return op is not None and op[0] in _BODY_OPS

    def attached_layers(self, action: str, body: bytes) -> list[str]:
        """The layer version ARNs a CreateFunction or UpdateFunctionConfiguration body
        attaches (what is not a list of strings is left to the handler to refuse)."""
        if action not in _LAYER_USERS:
            return []
        layers = _json(body).get("Layers")
        if not isinstance(layers, list):
            return []
        return [arn for arn in layers if isinstance(arn, str)]

    def _durable(self, method: str, path: str) -> AccessRequest | None:
        """Durable executions act on the execution's ARN (a callback: the execution its id
        names); ListDurableExecutionsByFunction on the function's."""
        m = _DURABLE.fullmatch(path)
        if m is not None:
            operation = _DURABLE_OPS.get((method, m[2] or ""))
            if operation is None:
                return AccessRequest(UNKNOWN, "*")
            return AccessRequest(f"lambda:{operation}", m[1])
        m = _DURABLE_CALLBACK.fullmatch(path)
        if m is not None and method == "POST":
            from lamina.control.durable_ops import parse_callback_id

            target = parse_callback_id(m[1])
            return AccessRequest(f"lambda:{_CALLBACK_OPS[m[2]]}", target[0] if target else "*")
        m = _DURABLE_LIST.fullmatch(path)
        if m is not None and method == "GET":
            try:
                ref = parse_function_ref(m[1], region=self.region, account=self.account)
            except LaminaError:
                return AccessRequest("lambda:ListDurableExecutionsByFunction", "*")
            return AccessRequest(
                "lambda:ListDurableExecutionsByFunction",
                function_arn(self.region, self.account, ref.name),
            )
        return None

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> AccessRequest | None:
        """The request's action, resource and action-specific context keys; None for the
        open endpoints. `headers` has lower-case names."""
        if path in _OPEN_PATHS or _CODE.fullmatch(path) or is_console_path(path):
            return None
        if method == "HEAD":
            method = "GET"  # Starlette serves HEAD wherever GET is: the same permission
        if method == "GET" and _LAMINA_INVOCATION.fullmatch(path):
            return None  # authorized by its handler, on the recorded function's ARN
        cloudwatch = cloudwatch_protocol(method, path, headers)
        if cloudwatch is not None:
            return AccessRequest(
                f"cloudwatch:{cloudwatch_action(cloudwatch, path, headers, body)}", "*"
            )
        if path == "/" and method == "POST":
            return self._json_api(headers.get("x-amz-target", ""), body)
        trimmed = path.rstrip("/") or "/"
        m = _FUNCTION.fullmatch(trimmed)
        if m is not None:
            return self._function(method, m, query, body)
        m = _ESM.fullmatch(trimmed)
        if m is not None:
            return self._event_source_mapping(method, m, body)
        m = _LAYERS.fullmatch(trimmed)
        if m is not None:
            return self._layer(method, m, query)
        m = _CAPACITY.fullmatch(trimmed)
        if m is not None:
            return self._capacity(method, m, body)
        durable = self._durable(method, trimmed)
        if durable is not None:
            return durable
        m = _TAGS.fullmatch(trimmed)
        if m is not None:
            operation = _TAG_OPS.get(method)
            if operation is None:
                return AccessRequest(UNKNOWN, "*")
            return AccessRequest(f"lambda:{operation}", m[1])
        m = _RESOURCE_POLICY.fullmatch(trimmed)
        if m is not None:
            operation = _RESOURCE_POLICY_OPS.get(method)
            if operation is None:
                return AccessRequest(UNKNOWN, "*")
            return AccessRequest(f"lambda:{operation}", m[1])
        m = _CSC.fullmatch(trimmed)
        if m is not None:
            return self._code_signing(method, m)
        websocket = self._websocket(method, trimmed)
        if websocket is not None:
            return websocket
        if trimmed == "/2016-08-19/account-settings" and method == "GET":
            return AccessRequest("lambda:GetAccountSettings", "*")
        m = _LAMINA_DEBUG.fullmatch(trimmed)
        if m is not None and method in ("POST", "DELETE"):
            return AccessRequest("lamina:DebugFunction", self._debug_arn(m.group(1), query))
        name = _LAMINA.get((method, trimmed))
        if name is None and _LAMINA_ROLE.fullmatch(trimmed):
            name = _ROLE_OPS.get(method)
        elif name is None and _LAMINA_STACK.fullmatch(trimmed):
            name = _STACK_OPS.get(method)
        elif name is None and _LAMINA_BROKER.fullmatch(trimmed):
            name = _BROKER_OPS.get(method)
        elif name is None and _LAMINA_SECRET.fullmatch(trimmed):
            name = _SECRET_OPS.get(method)
        elif name is None and method == "DELETE" and _LAMINA_KEY.fullmatch(trimmed):
            name = "DeleteKey"
        elif name is None and method == "POST" and _LAMINA_KEY_POLICIES.fullmatch(trimmed):
            name = "AttachKeyPolicy"
        if name is not None:
            return AccessRequest(f"lamina:{name}", "*")
        return AccessRequest(UNKNOWN, "*")

    # -- API Gateway (WebSocket APIs) ----------------------------------------------

    def _websocket(self, method: str, path: str) -> AccessRequest | None:
        """apigatewayv2 (`apigateway:<METHOD>` on `arn:aws:apigateway:<region>::/apis/...`)
        and the management API (`execute-api:ManageConnections` on
        `arn:aws:execute-api:<region>:<account>:<apiId>/<stage>/<METHOD>/@connections/<id>`);
        None for other paths."""
        if path == "/v2/apis" or path.startswith("/v2/apis/"):
            return AccessRequest(
                f"apigateway:{method}", f"arn:aws:apigateway:{self.region}::{path[3:]}"
            )
        m = _MANAGE.fullmatch(path)
        if m is None:
            return None
        api_id, stage, connection_id = m[1], m[2], m[3]
        if api_id is None:
            found = self.locate_connection(connection_id)
            api_id, stage = found if found is not None else ("*", "*")
        return AccessRequest(
            "execute-api:ManageConnections",
            f"arn:aws:execute-api:{self.region}:{self.account}:{api_id}/{stage}/{method}"
            f"/@connections/{connection_id}",
        )

    # -- Lambda --------------------------------------------------------------------

    def _debug_arn(self, name: str, query: Mapping[str, str]) -> str:
        try:
            ref = parse_function_ref(
                name, region=self.region, account=self.account, qualifier=query.get("Qualifier")
            )
        except LaminaError:
            return self.function_arn(name)
        return self.function_arn(ref.name, ref.qualifier)

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        return function_arn(self.region, self.account, name, qualifier)

    def _function_resource(self, raw: str, qualifier: str | None, qualified: bool) -> str:
        """The ARN of the function a path names: qualified by the name's own qualifier or the
        Qualifier parameter if the operation acts on a version or alias."""
        try:
            ref = parse_function_ref(
                raw, region=self.region, account=self.account, qualifier=qualifier
            )
        except LaminaError:
            # The handler will refuse the name; authorization still needs a resource.
            return self.function_arn(raw)
        return self.function_arn(ref.name, ref.qualifier if qualified else None)

    def _function(
        self, method: str, m: re.Match[str], query: Mapping[str, str], body: bytes | None
    ) -> AccessRequest:
        version, raw_name, rest = m[1], m[2], m[3]
        if raw_name is None:
            if version != "2015-03-31":
                return AccessRequest(UNKNOWN, "*")
            if method == "GET":
                return AccessRequest("lambda:ListFunctions", "*")
            if method == "POST":
                name = _json(body).get("FunctionName")
                resource = self.function_arn(name) if isinstance(name, str) and name else "*"
                return AccessRequest("lambda:CreateFunction", resource)
            return AccessRequest(UNKNOWN, "*")
        op = _FUNCTION_OPS.get((version, _shape(rest), method))
        if op is None:
            return AccessRequest(UNKNOWN, "*")
        operation, qualified = op
        if operation == "GetProvisionedConcurrencyConfig" and "List" in query:
            operation, qualified = "ListProvisionedConcurrencyConfigs", False
        resource = self._function_resource(raw_name, query.get("Qualifier"), qualified)
        context: dict[str, str | list[str]] = {"lambda:FunctionArn": resource}
        if operation in _BODY_OPS:
            data = _json(body)
            if isinstance(data.get("AuthType"), str):
                context["lambda:FunctionUrlAuthType"] = data["AuthType"]
            if isinstance(data.get("Principal"), str):
                context["lambda:Principal"] = data["Principal"]
        return AccessRequest(f"lambda:{operation}", resource, context)

    def _event_source_mapping(
        self, method: str, m: re.Match[str], body: bytes | None
    ) -> AccessRequest:
        operation = _ESM_OPS.get((method, m[1] is not None))
        if operation is None:
            return AccessRequest(UNKNOWN, "*")
        if m[1] is not None:
            arn = f"arn:aws:lambda:{self.region}:{self.account}:event-source-mapping:{m[1]}"
            return AccessRequest(f"lambda:{operation}", arn)
        context: dict[str, str | list[str]] = {}
        name = _json(body).get("FunctionName") if operation.startswith("Create") else None
        if isinstance(name, str) and name:
            context["lambda:FunctionArn"] = self._function_resource(name, None, True)
        return AccessRequest(f"lambda:{operation}", "*", context)

    def _layer(self, method: str, m: re.Match[str], query: Mapping[str, str]) -> AccessRequest:
        name, version = m[1], m[2]
        if name is None:
            if method != "GET":
                return AccessRequest(UNKNOWN, "*")
            if query.get("find") == "LayerVersion":
                return AccessRequest("lambda:GetLayerVersion", query.get("Arn") or "*")
            return AccessRequest("lambda:ListLayers", "*")
        layer = self._layer_arn(name)
        if version is None:
            if method == "GET":
                return AccessRequest("lambda:ListLayerVersions", "*")
            if method == "POST":
                return AccessRequest("lambda:PublishLayerVersion", layer)
            return AccessRequest(UNKNOWN, "*")
        if m[3] is not None:
            operation = _LAYER_POLICY_OPS.get((method, m[3] != "/policy"))
        else:
            operation = {"GET": "GetLayerVersion", "DELETE": "DeleteLayerVersion"}.get(method)
        if operation is None:
            return AccessRequest(UNKNOWN, "*")
        return AccessRequest(f"lambda:{operation}", f"{layer}:{version}")

    def _capacity(self, method: str, m: re.Match[str], body: bytes | None) -> AccessRequest:
        """Capacity providers act on `capacity-provider:NAME` (a name given as an ARN is
        taken as is); the listing on `*`."""
        operation = _CAPACITY_OPS.get((method, m[1] is not None, m[2] is not None))
        if operation is None:
            return AccessRequest(UNKNOWN, "*")
        name: Any = m[1]
        if operation == "CreateCapacityProvider":
            name = _json(body).get("CapacityProviderName")
        if not isinstance(name, str) or not name:
            return AccessRequest(f"lambda:{operation}", "*")
        if name.startswith("arn:"):
            return AccessRequest(f"lambda:{operation}", name)
        resource = f"arn:aws:lambda:{self.region}:{self.account}:capacity-provider:{name}"
        return AccessRequest(f"lambda:{operation}", resource)

    def _code_signing(self, method: str, m: re.Match[str]) -> AccessRequest:
        """Creating and listing act on `*`; the rest on the configuration's ARN (as given:
        the handler refuses a malformed one)."""
        arn, functions = m[1], m[2]
        if arn is None:
            operation = {"POST": "CreateCodeSigningConfig", "GET": "ListCodeSigningConfigs"}
            name = operation.get(method)
            return AccessRequest(f"lambda:{name}" if name else UNKNOWN, "*")
        if functions:
            if method != "GET":
                return AccessRequest(UNKNOWN, "*")
            return AccessRequest("lambda:ListFunctionsByCodeSigningConfig", arn)
        name = _CSC_OPS.get(method)
        return AccessRequest(f"lambda:{name}" if name else UNKNOWN, arn if name else "*")

    def _layer_arn(self, name: str) -> str:
        if name.startswith("arn:"):
            return name  # LayerName may be the layer's ARN
        return f"arn:aws:lambda:{self.region}:{self.account}:layer:{name}"

    # -- the JSON APIs -------------------------------------------------------------

    def _json_api(self, target: str, body: bytes | None) -> AccessRequest:
        data = _json(body)
        if target.startswith(EVENTS_PREFIX):
            operation = target.removeprefix(EVENTS_PREFIX)
            member = _RULE_MEMBER.get(operation)
            if member is not None:
                name = data.get(member)
                resource = self.rule_arn(name if isinstance(name, str) else "*")
            elif operation == "PutEvents":
                resource = f"arn:aws:events:{self.region}:{self.account}:event-bus/default"
            else:
                resource = "*"
            return AccessRequest(f"events:{operation}", resource)
        if target.startswith(LOGS_PREFIX):
            operation = target.removeprefix(LOGS_PREFIX)
            group = data.get("logGroupName") or data.get("logGroupIdentifier")
            if not isinstance(group, str) or not group:
                resource = f"arn:aws:logs:{self.region}:{self.account}:log-group:*"
            elif group.startswith("arn:"):
                resource = group if group.endswith(":*") else f"{group}:*"
            else:
                resource = f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}:*"
            stream = data.get("logStreamName")
            if operation in _STREAM_OPS and isinstance(stream, str):
                resource = f"{resource.removesuffix(':*')}:log-stream:{stream}"
            return AccessRequest(f"logs:{operation}", resource)
        return AccessRequest(UNKNOWN, "*")

    def rule_arn(self, name: str) -> str:
        return f"arn:aws:events:{self.region}:{self.account}:rule/{name}"


def _shape(rest: str | None) -> str:
    """The part of a function path after the name, with its one variable part as `*`
    (`/aliases/live` -> `/aliases/*`)."""
    if not rest:
        return ""
    parts = rest.split("/")
    if len(parts) == 3 and parts[1] in ("aliases", "policy"):
        return f"/{parts[1]}/*"
    return rest


def _json(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = untrusted_json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
