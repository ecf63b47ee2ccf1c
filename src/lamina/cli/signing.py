"""How the `lamina` command signs its requests: SigV4 by botocore's signer, on httpx requests.

Credentials are found in this order (the first that gives a key wins):
1. `--profile NAME` (or `AWS_PROFILE`): that profile of the AWS shared files;
2. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) in the environment;
3. the `lamina` profile that `lamina serve` wrote on its first start;
4. the admin key in the data directory (`LAMINA_DATA_DIR`, else `~/.lamina`), if this user can
   read it (the same user that runs the server, on the same host).
Without any, requests go unsigned (a server with `--auth off` takes them).

The region signed for is the server's own, asked once from its open `/health`.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import click
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from lamina.auth.keys import read_admin_key
from lamina.settings import DEFAULT_REGION, default_data_dir

#: the X-Amz-Target prefixes of the JSON APIs, and the service each is signed for
_TARGET_SERVICES = (("Logs_", "logs"), ("AWSEvents.", "events"))


def _profile_credentials(profile: str) -> Credentials | None:
    try:
        creds = Session(profile=profile).get_credentials()
    except BotoCoreError:
        return None
    if creds is None:
        return None
    frozen = creds.get_frozen_credentials()
    if not frozen.access_key or not frozen.secret_key:
        return None
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def find_credentials(profile: str | None = None) -> Credentials | None:
    """The credentials the CLI signs with (see the module docstring for the order)."""
    return locate_credentials(profile)[0]


def locate_credentials(profile: str | None = None) -> tuple[Credentials | None, str]:
    """The credentials the CLI signs with, and where they came from (in words, for an
    authentication failure's message)."""
    profile = profile or os.environ.get("AWS_PROFILE")
    if profile:
        creds = _profile_credentials(profile)
        if creds is None:
            raise click.ClickException(f"the AWS profile {profile!r} has no credentials")
        return creds, f"the AWS profile {profile!r} (key {creds.access_key})"
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        creds = Credentials(key_id, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
        return creds, f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment (key {key_id})"
    creds = _profile_credentials("lamina")
    if creds is not None:
        return creds, f"the 'lamina' AWS profile (key {creds.access_key})"
    data_dir = default_data_dir()
    admin = read_admin_key(data_dir)
    if admin is not None:
        return Credentials(*admin), f"the admin key in {data_dir} (key {admin[0]})"
    return None, (
        "none: no --profile/AWS_PROFILE, no AWS_ACCESS_KEY_ID in the environment, no 'lamina' "
        f"AWS profile, and no admin key readable in {data_dir} (the request went unsigned)"
    )


#: the error types of a request whose signature or key the server did not accept
AUTH_ERRORS = frozenset(
    {
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "ExpiredTokenException",
    }
)

AUTH_FIX = (
    "To fix: run the command as the user that runs `lamina serve` on the same host (it reads "
    "the admin key from the data directory; set LAMINA_DATA_DIR if the server uses --data-dir), "
    "or use the 'lamina' AWS profile the server wrote on its first start (--profile lamina), "
    "or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of a key made with `lamina keys create`."
)


def profile_endpoint(profile: str) -> str | None:
    """The `endpoint_url` of an AWS profile in the shared config file, if it sets one."""
    try:
        value = Session(profile=profile).get_scoped_config().get("endpoint_url")
    except BotoCoreError:  # a profile that does not exist, or an unreadable config file
        return None
    return str(value) if value else None


def _root_profile() -> str | None:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    value = ctx.find_root().params.get("profile")
    return str(value) if value else None


class Signer(httpx.Auth):
    """httpx authentication that signs every request with SigV4 for the server's region."""

    def __init__(
        self, endpoint: str, credentials: Credentials | None = None, region: str | None = None
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._credentials = credentials
        self._found = credentials is not None
        self._region = region
        #: where the credentials came from, in words (after the first request)
        self.source = "the credentials given" if credentials is not None else "none looked up yet"

    def _region_of_server(self) -> str:
        if self._region is None:
            try:
                health = httpx.get(self._endpoint + "/health", timeout=10).json()
                self._region = str(health.get("region") or DEFAULT_REGION)
            except (httpx.HTTPError, ValueError):
                self._region = DEFAULT_REGION
        return self._region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._found:
            self._credentials, self.source = locate_credentials(_root_profile())
            self._found = True
        if self._credentials is not None:
            self.sign(request, self._credentials)
        yield request

    def sign(self, request: httpx.Request, credentials: Credentials) -> None:
        target = request.headers.get("x-amz-target", "")
        service = next((s for p, s in _TARGET_SERVICES if target.startswith(p)), "lambda")
        if request.url.path.startswith("/v2/"):
            service = "apigateway"  # apigatewayv2 (`lamina websockets`)
        body = request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("host", "content-type")
        }
        headers.update({k: v for k, v in request.headers.items() if k.lower().startswith("x-amz-")})
        aws = AWSRequest(method=request.method, url=str(request.url), data=body, headers=headers)
        SigV4Auth(credentials, service, self._region_of_server()).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
