"""The permission checks of callers that are not API clients: function URLs and EventBridge.

Lambda checks these against the function's resource-based policy (the one AddPermission
writes), whatever identity policies say:

- a URL with AuthType NONE serves only if the policy of its function (or alias) allows
  `lambda:InvokeFunctionUrl` to everyone (`Principal: "*"`) with `lambda:FunctionUrlAuthType`
  NONE — what `aws lambda add-permission --principal '*' --function-url-auth-type NONE`
  writes, and what the console adds when it makes a public URL;
- a URL with AuthType AWS_IAM serves a signed caller whom the identity policies or the
  resource policy allow `lambda:InvokeFunctionUrl` (`authorize_url`);
- an EventBridge rule invokes a target only if the target's policy allows
  `lambda:InvokeFunction` to the service principal `events.amazonaws.com` (with the rule's ARN
  as `aws:SourceArn` and the account as `aws:SourceAccount`, for the conditions AddPermission
  writes from SourceArn and SourceAccount).
"""

from __future__ import annotations

from lamina.auth.policy import EVENTS_SERVICE, Caller, Policy, authorize
from lamina.auth.principal import AccessRequest, Decision, Principal

INVOKE_URL = "lambda:InvokeFunctionUrl"
INVOKE = "lambda:InvokeFunction"


def url_request(function_arn: str, auth_type: str, principal: Principal | None) -> AccessRequest:
    context: dict[str, str | list[str]] = {
        "lambda:FunctionUrlAuthType": auth_type,
        "lambda:FunctionArn": function_arn,
    }
    if principal is not None:
        context["aws:PrincipalArn"] = principal.role_arn or principal.arn
        context["aws:PrincipalAccount"] = principal.account
    return AccessRequest(INVOKE_URL, function_arn, context)


def public_url_allowed(function_arn: str, resource_policy: Policy | None) -> bool:
    """Whether a URL with AuthType NONE may serve anyone (`function_arn` is qualified for an
    alias's URL, and `resource_policy` is that alias's)."""
    if resource_policy is None:
        return False
    decision = authorize(
        None, url_request(function_arn, "NONE", None), resource_policy, caller=Caller()
    )
    return decision is Decision.ALLOW


def authorize_url(
    principal: Principal | None, function_arn: str, resource_policy: Policy | None
) -> Decision:
    """The decision for a signed caller of a URL with AuthType AWS_IAM (None: authentication
    is off, which allows, as for the API)."""
    return authorize(principal, url_request(function_arn, "AWS_IAM", principal), resource_policy)


def events_may_invoke(
    function_arn: str, rule_arn: str, account: str, resource_policy: Policy | None
) -> bool:
    """Whether the rule `rule_arn` may invoke the target `function_arn` (as named by the
    target: qualified if the target is)."""
    if resource_policy is None:
        return False
    request = AccessRequest(
        INVOKE,
        function_arn,
        {"aws:SourceArn": rule_arn, "aws:SourceAccount": account},
    )
    decision = authorize(None, request, resource_policy, caller=Caller(service=EVENTS_SERVICE))
    return decision is Decision.ALLOW
