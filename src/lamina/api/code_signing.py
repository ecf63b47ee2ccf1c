"""Lambda REST API: code signing configurations (2020-04-22) and a function's link to one
(2020-06-30); and Lamina's own `/lamina/signers` endpoints for the signing profiles it trusts.

`PUT /lamina/signers` takes `{"ProfileVersionArn", "PublicKey"}` (PEM) and trusts that
profile version; `GET` lists them; `POST /lamina/signers/revoke` and `DELETE /lamina/signers`
take `{"ProfileVersionArn"}`. A signer is answered as `{"ProfileVersionArn", "PublicKey",
"Added", "Revoked"?}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param, timestamp
from lamina.control.code_signing import CodeSigning
from lamina.errors import InvalidParameterValueError
from lamina.models import CodeSigningConfig, TrustedSigner

_CREATE_MEMBERS = frozenset({"Description", "AllowedPublishers", "CodeSigningPolicies", "Tags"})
_UPDATE_MEMBERS = frozenset({"Description", "AllowedPublishers", "CodeSigningPolicies"})


def _signing(request: Request) -> CodeSigning:
    return app_state(request).functions.signing


def _known(body: dict[str, Any], members: frozenset[str]) -> None:
    unknown = sorted(set(body) - members)
    if unknown:
        raise InvalidParameterValueError(f"Unknown parameter: {', '.join(unknown)}.")


def config_json(config: CodeSigningConfig) -> dict[str, Any]:
    """A CodeSigningConfig, in the model's member order."""
    return {
        "CodeSigningConfigId": config.id,
        "CodeSigningConfigArn": config.arn,
        "Description": config.description,
        "AllowedPublishers": {"SigningProfileVersionArns": list(config.allowed_profiles)},
        "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": config.policy},
        "LastModified": timestamp(config.last_modified),
    }


async def create_code_signing_config(request: Request) -> Response:
    body = await json_body(request)
    _known(body, _CREATE_MEMBERS)
    config = await _signing(request).create(
        body.get("Description"),
        body.get("AllowedPublishers"),
        body.get("CodeSigningPolicies"),
        body.get("Tags"),
    )
    return json_response({"CodeSigningConfig": config_json(config)}, status=201)


async def get_code_signing_config(request: Request) -> Response:
    config = _signing(request).find(request.path_params["arn"])
    return json_response({"CodeSigningConfig": config_json(config)})


async def update_code_signing_config(request: Request) -> Response:
    body = await json_body(request)
    _known(body, _UPDATE_MEMBERS)
    config = await _signing(request).update(
        request.path_params["arn"],
        body.get("Description"),
        body.get("AllowedPublishers"),
        body.get("CodeSigningPolicies"),
    )
    return json_response({"CodeSigningConfig": config_json(config)})


async def delete_code_signing_config(request: Request) -> Response:
    await _signing(request).delete(request.path_params["arn"])
    return Response(status_code=204)


async def list_code_signing_configs(request: Request) -> Response:
    configs, marker = _signing(request).configs(
        request.query_params.get("Marker"), max_items_param(request)
    )
    out: dict[str, Any] = {"CodeSigningConfigs": [config_json(c) for c in configs]}
    if marker is not None:
        out["NextMarker"] = marker
    return json_response(out)


async def list_functions_by_code_signing_config(request: Request) -> Response:
    arns, marker = _signing(request).functions_using(
        request.path_params["arn"], request.query_params.get("Marker"), max_items_param(request)
    )
    out: dict[str, Any] = {"FunctionArns": arns}
    if marker is not None:
        out["NextMarker"] = marker
    return json_response(out)


async def put_function_code_signing_config(request: Request) -> Response:
    body = await json_body(request)
    _known(body, frozenset({"CodeSigningConfigArn"}))
    name, config = await _signing(request).link(
        request.path_params["name"], body.get("CodeSigningConfigArn")
    )
    return json_response({"CodeSigningConfigArn": config.arn, "FunctionName": name})


async def get_function_code_signing_config(request: Request) -> Response:
    name, config = _signing(request).function_config(request.path_params["name"])
    # A function without a configuration is answered with an empty ARN (both members are
    # required in the model), as Lambda answers it.
    return json_response(
        {"CodeSigningConfigArn": config.arn if config is not None else "", "FunctionName": name}
    )


async def delete_function_code_signing_config(request: Request) -> Response:
    await _signing(request).unlink(request.path_params["name"])
    return Response(status_code=204)


# -- Lamina's trusted signers ----------------------------------------------------------


def signer_json(signer: TrustedSigner) -> dict[str, Any]:
    out = {
        "ProfileVersionArn": signer.profile_arn,
        "PublicKey": signer.public_key_pem,
        "Added": timestamp(signer.added),
    }
    if signer.revoked is not None:
        out["Revoked"] = timestamp(signer.revoked)
    return out


async def list_signers(request: Request) -> Response:
    return json_response({"Signers": [signer_json(s) for s in _signing(request).signers()]})


async def put_signer(request: Request) -> Response:
    body = await json_body(request)
    _known(body, frozenset({"ProfileVersionArn", "PublicKey"}))
    signer = await _signing(request).put_signer(
        body.get("ProfileVersionArn"), body.get("PublicKey")
    )
    return json_response({"Signer": signer_json(signer)})


async def _profile_arn(request: Request) -> str:
    body = await json_body(request)
    _known(body, frozenset({"ProfileVersionArn"}))
    arn = body.get("ProfileVersionArn")
    if not isinstance(arn, str) or not arn:
        raise InvalidParameterValueError("ProfileVersionArn is required.")
    return arn


async def revoke_signer(request: Request) -> Response:
    signer = await _signing(request).revoke_signer(await _profile_arn(request))
    return json_response({"Signer": signer_json(signer)})


async def remove_signer(request: Request) -> Response:
    await _signing(request).remove_signer(await _profile_arn(request))
    return Response(status_code=204)
