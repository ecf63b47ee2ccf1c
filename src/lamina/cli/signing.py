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
    profile = profile or os.environ.get("AWS_PROFILE")
    if profile:
        creds = _profile_credentials(profile)
        if creds is None:
            raise click.ClickException(f"the AWS profile {profile!r} has no credentials")
        return creds
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return Credentials(key_id, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    creds = _profile_credentials("lamina")
    if creds is not None:
        return creds
    admin = read_admin_key(default_data_dir())
    return Credentials(*admin) if admin is not None else None


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
            self._credentials = find_credentials(_root_profile())
            self._found = True
        if self._credentials is not None:
            self.sign(request, self._credentials)
        yield request

    def sign(self, request: httpx.Request, credentials: Credentials) -> None:
        target = request.headers.get("x-amz-target", "")
        service = next((s for p, s in _TARGET_SERVICES if target.startswith(p)), "lambda")
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
