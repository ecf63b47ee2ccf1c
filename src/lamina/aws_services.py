"""Which AWS services Lamina serves, and how SDKs name a service's endpoint.

One table, read by the function environment (`scheduler.lambda_env`: which
`AWS_ENDPOINT_URL_<ID>` variables point at Lamina) and by the API's front door
(`api.unserved`: a request for any other service is refused at once, naming the variable
that would send it elsewhere). A later API family adds one row here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ServedService:
    """An AWS API that Lamina answers on its own port."""

    #: the SigV4 credential scope's service ("lambda", "logs", "events")
    signing_name: str
    #: the SDKs' endpoint id: `AWS_ENDPOINT_URL_<endpoint_id>` (botocore and the AWS SDK for
    #: JavaScript v3 both derive it from the model's serviceId, upper case, `_` for spaces)
    endpoint_id: str
    #: the JSON protocol's X-Amz-Target prefix, for APIs that share `POST /`
    target_prefix: str | None = None


SERVED: tuple[ServedService, ...] = (
    ServedService("lambda", "LAMBDA"),
    ServedService("logs", "CLOUDWATCH_LOGS", "Logs_20140328."),
    ServedService("events", "EVENTBRIDGE", "AWSEvents."),
    # WebSocket APIs: apigatewayv2 (signing name `apigateway`) and the `@connections` API
    ServedService("apigateway", "APIGATEWAYV2"),
    ServedService("execute-api", "APIGATEWAYMANAGEMENTAPI"),
    # CloudWatch metrics: RPC v2 CBOR, JSON 1.0 (this target prefix) and query
    ServedService("monitoring", "CLOUDWATCH", "GraniteServiceVersion20100801."),
)
SERVED_SIGNING_NAMES = frozenset(s.signing_name for s in SERVED)

#: endpoint ids of services whose signing name is not their id (the rest: upper case, `_`)
_ENDPOINT_IDS = {
    "logs": "CLOUDWATCH_LOGS",
    "events": "EVENTBRIDGE",
    "monitoring": "CLOUDWATCH",
    "secretsmanager": "SECRETS_MANAGER",
    "states": "SFN",
    "email": "SES",
    "execute-api": "API_GATEWAY",
    "apigateway": "API_GATEWAY",
    "cognito-idp": "COGNITO_IDENTITY_PROVIDER",
    "elasticloadbalancing": "ELASTIC_LOAD_BALANCING_V2",
    "es": "OPENSEARCH",
}

#: X-Amz-Target prefixes of common JSON-protocol services, for requests that carry no
#: signature (a server with `--auth off` still hears from SDKs that sign: this is the backup)
_TARGET_SERVICES = {
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodb",
    "AmazonSQS": "sqs",
    "AmazonSSM": "ssm",
    "secretsmanager": "secretsmanager",
    "Kinesis_20131202": "kinesis",
    "AWSStepFunctions": "states",
    "TrentService": "kms",
    "AWSCognitoIdentityProviderService": "cognito-idp",
    "Firehose_20150804": "firehose",
    "GraniteServiceVersion20100801": "monitoring",
    "AWSXRay": "xray",
}

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]*/([^/,\s]+)/aws4_request")


def endpoint_id(signing_name: str) -> str:
    """The `AWS_ENDPOINT_URL_<ID>` suffix SDKs read for a service."""
    return _ENDPOINT_IDS.get(signing_name, signing_name.upper().replace("-", "_"))


def requested_service(authorization: str, query_credential: str, target: str) -> str | None:
    """The service a request is for, from its SigV4 scope (header or presigned query) or,
    unsigned, from its X-Amz-Target; None if it says nothing."""
    match = _SCOPE.search(authorization)
    if match:
        return match[1]
    parts = query_credential.split("/")
    if len(parts) == 5 and parts[4] == "aws4_request":
        return parts[3]
    if target:
        prefix = target.split(".", 1)[0]
        for served in SERVED:
            if served.target_prefix and target.startswith(served.target_prefix):
                return served.signing_name
        return _TARGET_SERVICES.get(prefix)
    return None
