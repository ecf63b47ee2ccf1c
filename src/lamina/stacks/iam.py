"""AWS::IAM::Role as a Lamina role (`PUT /lamina/roles/{name}`).

A Lamina role is a set of identity policy documents: the role's inline `Policies` and the
documents of the AWS managed policies it names in `ManagedPolicyArns`, for the few Lamina
knows (below). An unknown managed policy is left out with a warning naming it.
`AssumeRolePolicyDocument` has no meaning here (Lambda is the only one to assume roles).
"""

from __future__ import annotations

from typing import Any

from lamina.stacks import Physical
from lamina.stacks.kinds import Context, Record, Replace

_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]


def _allow(actions: list[str], resource: str = "*") -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}],
    }


#: AWS managed policies, by name, as AWS documents their permissions (the parts Lamina
#: has a use for)
MANAGED: dict[str, dict[str, Any]] = {
    "AWSLambdaBasicExecutionRole": _allow(_LOGS),
    "AWSLambdaRole": _allow(["lambda:InvokeFunction"]),
    "AWSLambdaExecute": {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["logs:*"], "Resource": "arn:aws:logs:*:*:*"},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": "arn:aws:s3:::*",
            },
        ],
    },
    "AWSXrayWriteOnlyAccess": _allow(
        [
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "xray:GetSamplingRules",
            "xray:GetSamplingTargets",
            "xray:GetSamplingStatisticSummaries",
        ]
    ),
    "AWSLambdaSQSQueueExecutionRole": _allow(
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS]
    ),
    "AWSLambdaVPCAccessExecutionRole": _allow(
        [
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
            *_LOGS,
        ]
    ),
    "AWSLambda_FullAccess": _allow(["lambda:*"]),
    "AWSLambda_ReadOnlyAccess": _allow(["lambda:Get*", "lambda:List*"]),
}
#: a role with no policy (Lamina requires one document): allows nothing
_NOTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": "lambda:InvokeFunction", "Resource": "*"}],
}


def documents(ctx: Context, logical_id: str, props: dict[str, Any]) -> list[dict[str, Any]]:
    docs = [p["PolicyDocument"] for p in props.get("Policies") or [] if isinstance(p, dict)]
    unknown = []
    for arn in props.get("ManagedPolicyArns") or []:
        name = str(arn).rsplit("/", 1)[-1]
        if name in MANAGED:
            docs.append(MANAGED[name])
        else:
            unknown.append(str(arn))
    if unknown:
        ctx.warn(
            f"{logical_id}: managed policies Lamina does not know are left out: "
            + ", ".join(unknown)
        )
    return docs or [_NOTHING]


class Role:
    def _name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        return str(props.get("RoleName") or ctx.name_for(logical_id, 64))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name = self._name(ctx, logical_id, props)
        if ctx.client.call("GET", f"/lamina/roles/{name}", ok_missing=True) is not None:
            from lamina.stacks.kinds import ResourceFailed

            raise ResourceFailed(f"role {name} already exists")
        return self._put(ctx, logical_id, name, props)

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        name = self._name(ctx, logical_id, props)
        if name != old["physical_ref"]:
            raise Replace()  # (a new path alone is put in place: Lamina replaces the role)
        return self._put(ctx, logical_id, name, props)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        ctx.client.call("DELETE", f"/lamina/roles/{record['physical_ref']}", ok_missing=True)

    def _put(self, ctx: Context, logical_id: str, name: str, props: dict[str, Any]) -> Physical:
        body: dict[str, Any] = {"Policies": documents(ctx, logical_id, props)}
        if props.get("Path"):
            body["Path"] = props["Path"]
        if props.get("Description"):
            body["Description"] = props["Description"]
        out = ctx.client.call("PUT", f"/lamina/roles/{name}", body)["Role"]
        return Physical(ref=name, attributes={"Arn": out["Arn"], "RoleId": name})
