"""Web console sessions: what a browser holds instead of an access key's secret.

After a SigV4-verified sign-in (`api.console`), the server hands the browser a token that
names the key and when the session ends, sealed with the data directory's `Sealer` (AES-GCM
under `secret.key`). Nothing is stored: any node that shares the key file (every node of a
cluster does) reads any node's tokens, and a restart keeps sessions. The seal's context,
`CONTEXT`, is used for nothing else, so no other sealed value of Lamina's (a key's secret,
an environment's variables) can be replayed as a token, nor a token elsewhere.

A token proves only "this key signed in before `expires`": the key is looked up again in the
key store on every request (`KeyStore.principal`), so deleting a key ends its sessions at
once and a policy attached later applies at once. A session cannot be revoked on its own
before it expires (signing out forgets the cookie, not the token): that is the price of
being stateless, bounded by the TTL (`lamina serve --console-session-ttl`, within STS's
bounds: 15 minutes to 12 hours).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from lamina.auth.sigv4 import ExpiredToken, MissingAuthenticationToken
from lamina.settings import CONSOLE_SESSION_TTL_S
from lamina.store.sealed import SealedError, Sealer

#: the seal's context: a token is valid as nothing else, and nothing else as a token
CONTEXT = b"lamina-console-session"
#: the cookie that holds the token (`Path=/; HttpOnly; SameSite=Strict`)
COOKIE = "lamina-console"
#: with the cookie, what stands for a signature (`api.authn`): a cross-site form or link
#: cannot send it
HEADER = "x-lamina-console"
#: a token is ~120 characters; anything much longer is not one (refused before decoding)
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Session:
    """A signed-in console session: whose key, and until when (Unix seconds)."""

    access_key_id: str
    expires: int


class SessionTokens:
    """Mints and reads session tokens (thread-safe: no mutable state)."""

    def __init__(
        self,
        sealer: Sealer,
        ttl_s: int = CONSOLE_SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sealer = sealer
        self.ttl_s = ttl_s
        self._clock = clock

    def mint(self, access_key_id: str, expires: int | None = None) -> tuple[str, Session]:
        """A token for `access_key_id`, valid `ttl_s` from now (or until `expires`)."""
        if expires is None:
            expires = int(self._clock()) + self.ttl_s
        session = Session(access_key_id, expires)
        plain = json.dumps({"k": session.access_key_id, "e": session.expires}).encode()
        sealed = self._sealer.seal(plain, CONTEXT)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode(), session

    def check(self, token: str) -> Session:
        """The live session `token` stands for; `ExpiredToken` once it has expired,
        `MissingAuthenticationToken` (as for a request without credentials) if it is not a
        token of ours or was altered."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise MissingAuthenticationToken()
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = json.loads(self._sealer.unseal(sealed, CONTEXT))
        except (binascii.Error, ValueError, SealedError):  # (json's and unicode's errors too)
            raise MissingAuthenticationToken() from None
        if not isinstance(fields, dict):
            raise MissingAuthenticationToken()
        key, expires = fields.get("k"), fields.get("e")
        if not isinstance(key, str) or not isinstance(expires, int):
            raise MissingAuthenticationToken()
        if expires <= self._clock():
            raise ExpiredToken()
        return Session(key, expires)


def token_in(cookie_header: str) -> str | None:
    """The session token in a Cookie header (several Cookie headers arrive joined with
    commas), if there is one."""
    for part in cookie_header.replace(",", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE:
            return value.strip()
    return None


def without_token(cookie_header: str) -> str:
    """A Cookie header without the session's cookie: what a function URL or HTTP route
    hands its function (they share the console's origin, so the browser sends it them; no
    function may read a console session)."""
    kept = [
        part.strip()
        for part in cookie_header.split(";")
        if part.strip() and part.strip().partition("=")[0] != COOKIE
    ]
    return "; ".join(kept)
