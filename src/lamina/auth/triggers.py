"""The permission checks of callers that are not API clients: function URLs and EventBridge.

Lambda checks these against the function's resource-based policy (the one AddPermission
writes), whatever identity policies say:

- a URL with AuthType NONE serves only if the policy of its function (or alias) allows
  everyone (`Principal: "*"`) both `lambda:InvokeFunctionUrl` (with
  `lambda:FunctionUrlAuthType` NONE) and `lambda:InvokeFunction` (with
  `lambda:InvokedViaFunctionUrl` true): Lambda's rule since October 2025, and the two
  statements its console adds for a public URL (`add-permission --action
  lambda:InvokeFunctionUrl --function-url-auth-type NONE` and `--action lambda:InvokeFunction
  --invoked-via-function-url`);
- a URL with AuthType AWS_IAM serves a signed caller whom the identity policies or the
  resource policy allow both actions (`authorize_url`);
- an EventBridge rule invokes a target only if the target's policy allows
  `lambda:InvokeFunction` to the service principal `events.amazonaws.com` (with the rule's ARN
  as `aws:SourceArn` and the account as `aws:SourceAccount`, for the conditions AddPermission
  writes from SourceArn and SourceAccount);
- a WebSocket API's route invokes its integration's function only if the function's policy
  allows `lambda:InvokeFunction` to `apigateway.amazonaws.com` (with the route's
  `arn:aws:execute-api:<region>:<account>:<apiId>/<stage>/<routeKey>` as `aws:SourceArn`).
"""

from __future__ import annotations

from lamina.auth.policy import APIGATEWAY_SERVICE, EVENTS_SERVICE, Caller, Policy, authorize
from lamina.auth.principal import AccessRequest, Decision, Principal

#: the principal CloudWatch alarms invoke their Lambda actions as
ALARMS_SERVICE = "lambda.alarms.cloudwatch.amazonaws.com"

INVOKE_URL = "lambda:InvokeFunctionUrl"
INVOKE = "lambda:InvokeFunction"


def url_requests(
    function_arn: str, auth_type: str, principal: Principal | None
) -> tuple[AccessRequest, AccessRequest]:
    """The two requests a function URL call makes: InvokeFunctionUrl, then InvokeFunction."""
    context: dict[str, str | list[str]] = {
        "lambda:FunctionUrlAuthType": auth_type,
        "lambda:FunctionArn": function_arn,
        "lambda:InvokedViaFunctionUrl": "true",
    }
    if principal is not None:
        context["aws:PrincipalArn"] = principal.role_arn or principal.arn
        context["aws:PrincipalAccount"] = principal.account
    return (
        AccessRequest(INVOKE_URL, function_arn, context),
        AccessRequest(INVOKE, function_arn, context),
    )


def public_url_allowed(function_arn: str, resource_policy: Policy | None) -> bool:
    """Whether a URL with AuthType NONE may serve anyone (`function_arn` is qualified for an
    alias's URL, and `resource_policy` is that alias's)."""
    if resource_policy is None:
        return False
    return all(
        authorize(None, request, resource_policy, caller=Caller()) is Decision.ALLOW
        for request in url_requests(function_arn, "NONE", None)
    )


def authorize_url(
    principal: Principal | None, function_arn: str, resource_policy: Policy | None
) -> Decision:
    """The decision for a signed caller of a URL with AuthType AWS_IAM: the first of the two
    actions that is not allowed decides (None: authentication is off, which allows, as for
    the API)."""
    for request in url_requests(function_arn, "AWS_IAM", principal):
        decision = authorize(principal, request, resource_policy)
        if decision is not Decision.ALLOW:
            return decision
    return Decision.ALLOW


def events_may_invoke(
    function_arn: str, rule_arn: str, account: str, resource_policy: Policy | None
) -> bool:
    """Whether the rule `rule_arn` may invoke the target `function_arn` (as named by the
    target: qualified if the target is)."""
    return _service_may_invoke(EVENTS_SERVICE, function_arn, rule_arn, account, resource_policy)


def alarms_may_invoke(
    function_arn: str, alarm_arn: str, account: str, resource_policy: Policy | None
) -> bool:
    """Whether the CloudWatch alarm `alarm_arn` may invoke its action `function_arn` (the
    principal `lambda.alarms.cloudwatch.amazonaws.com`, as on AWS)."""
    return _service_may_invoke(ALARMS_SERVICE, function_arn, alarm_arn, account, resource_policy)


def apigateway_may_invoke(
    function_arn: str, source_arn: str, account: str, resource_policy: Policy | None
) -> bool:
    """Whether an API's route (`source_arn`, its execute-api ARN) may invoke its integration's
    function `function_arn` (as the integration names it: qualified if it is)."""
    return _service_may_invoke(
        APIGATEWAY_SERVICE, function_arn, source_arn, account, resource_policy
    )


def _service_may_invoke(
    service: str,
    function_arn: str,
    source_arn: str,
    account: str,
    resource_policy: Policy | None,
) -> bool:
    if resource_policy is None:
        return False
    request = AccessRequest(
        INVOKE,
        function_arn,
        {"aws:SourceArn": source_arn, "aws:SourceAccount": account},
    )
    decision = authorize(None, request, resource_policy, caller=Caller(service=service))
    return decision is Decision.ALLOW
