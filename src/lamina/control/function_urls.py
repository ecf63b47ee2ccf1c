"""Function URLs (the FunctionUrlConfig operations): a dedicated HTTP endpoint per function
qualifier, with Lambda's rules.

A URL belongs to the unqualified function (`$LATEST`) or to an alias, never to a version (the
Qualifier pattern refuses a number, as Lambda's does); one URL per qualifier. Its url-id (32
lower-case letters and digits) is drawn once and kept for the URL's life. URLs are kept in
memory, by qualifier and by url-id, because serving a request to one must not touch the
database. The store deletes a URL with its function or alias (one transaction); `forget` and
`forget_function` drop it here.

Lamina has no authentication yet, so `AuthType` must be `NONE` (a URL then serves only if the
function's resource policy opens it, see `api.http_front`). `InvokeMode` RESPONSE_STREAM
streams the function's response to the caller as it is written (`api.url_stream`).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.control import listing
from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LATEST, FunctionUrl, UrlCors
from lamina.store.function_urls import FunctionUrlStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

#: ListFunctionUrlConfigs' MaxItems (botocore's model: 1 to 50)
LIST_MAX_ITEMS = 50
AUTH_TYPES = ("NONE", "AWS_IAM")
INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
#: methods a CORS configuration may allow (Lambda's: CloudFormation lists the same)
CORS_METHODS = ("GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "*")

# FunctionUrlQualifier as Lambda's API reference gives it: `$LATEST` or an alias name (a
# version number is refused).
_QUALIFIER = re.compile(r"(^\$LATEST$)|((?!^[0-9]+$)([a-zA-Z0-9-_]+))")
_URL_ID_ALPHABET = string.ascii_lowercase + string.digits
_URL_ID_LENGTH = 32
# (member, domain name, where a constraint names it, most items, longest item, shortest item)
_CORS_LISTS = (
    ("AllowHeaders", "allow_headers", "cors.allowHeaders", 100, 1024, 0),
    ("AllowMethods", "allow_methods", "cors.allowMethods", 6, 6, 0),
    ("AllowOrigins", "allow_origins", "cors.allowOrigins", 100, 253, 1),
    ("ExposeHeaders", "expose_headers", "cors.exposeHeaders", 100, 1024, 0),
)
_CORS_MEMBERS = {"AllowCredentials", "MaxAge", *(m[0] for m in _CORS_LISTS)}
_CORS_MAX_AGE = 86_400


def _now() -> datetime:
    return datetime.now(UTC)


def new_url_id() -> str:
    """A fresh url-id: 32 random lower-case letters and digits, as Lambda's are."""
    return "".join(secrets.choice(_URL_ID_ALPHABET) for _ in range(_URL_ID_LENGTH))


class FunctionUrls:
    def __init__(self, functions: FunctionService, store: FunctionUrlStore) -> None:
        self._functions = functions
        self._store = store
        self._urls: dict[tuple[str, str], FunctionUrl] = {}
        self._by_id: dict[str, FunctionUrl] = {}
        # Update reads, merges and writes: one write at a time keeps a merge from losing
        # another's change, and two creates from both taking one qualifier.
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        for url in await self._functions.run(self._store.all):
            self._keep(url)

    # -- reads ---------------------------------------------------------------------

    def by_id(self, url_id: str) -> FunctionUrl | None:
        """The URL with this url-id, if there is one (no I/O: the serving path)."""
        return self._by_id.get(url_id)

    def get(self, ref: FunctionRef) -> FunctionUrl:
        qualifier = self._resolve(ref)
        url = self._urls.get((ref.name, qualifier))
        if url is None:
            raise _no_url()
        return url

    def list_urls(
        self, ref: FunctionRef, marker: str | None, max_items: int | None
    ) -> tuple[list[FunctionUrl], str | None]:
        """A page of the function's URLs (`$LATEST` first, then aliases by name) and the
        marker of the next page, if there is one."""
        if ref.qualifier is not None:
            raise InvalidParameterValueError(
                "ListFunctionUrlConfigs takes a function name or ARN without a qualifier."
            )
        self._functions.require(ref.name)
        c = v.Constraints()
        limit = v.max_items(c, max_items, LIST_MAX_ITEMS)
        c.check()
        urls = (url for (name, _), url in self._urls.items() if name == ref.name)
        return listing.page(
            "ListFunctionUrlConfigs", urls, lambda url: url.qualifier, limit, marker
        )

    # -- writes --------------------------------------------------------------------

    async def create(
        self, ref: FunctionRef, auth_type: Any, cors: Any = None, invoke_mode: Any = None
    ) -> FunctionUrl:
        c = v.Constraints()
        auth = _auth_type(c, auth_type, required=True)
        checked_cors = _cors(c, cors)
        mode = _invoke_mode(c, invoke_mode)
        c.check()
        assert auth is not None
        qualifier = self._resolve(ref)
        now = _now()
        async with self._writing:
            if (ref.name, qualifier) in self._urls:
                raise self._exists(ref.name, qualifier)
            url_id = new_url_id()
            while url_id in self._by_id:  # 36^32 makes this loop a formality
                url_id = new_url_id()
            url = FunctionUrl(
                function_name=ref.name,
                qualifier=qualifier,
                url_id=url_id,
                auth_type=auth,
                invoke_mode=mode or "BUFFERED",
                created=now,
                last_modified=now,
                cors=checked_cors,
            )
            if not await self._functions.run(self._store.create, url):
                # Deleted while this waited (the store found no function or alias).
                raise self._function_not_found(ref.name, qualifier)
            self._keep(url)
        await self._functions.changed(ref.name)
        return url

    async def update(
        self, ref: FunctionRef, auth_type: Any = None, cors: Any = None, invoke_mode: Any = None
    ) -> FunctionUrl:
        """UpdateFunctionUrlConfig: change what is given (a Cors given replaces the whole
        CORS configuration, as on Lambda)."""
        c = v.Constraints()
        auth = _auth_type(c, auth_type, required=False)
        checked_cors = _cors(c, cors)
        mode = _invoke_mode(c, invoke_mode)
        c.check()
        qualifier = self._resolve(ref)
        async with self._writing:
            current = self._urls.get((ref.name, qualifier))
            if current is None:
                raise _no_url()
            url = replace(
                current,
                auth_type=auth or current.auth_type,
                invoke_mode=mode or current.invoke_mode,
                cors=current.cors if cors is None else checked_cors,
                last_modified=_now(),
            )
            if not await self._functions.run(self._store.replace, url):
                raise _no_url()
            self._keep(url)
        await self._functions.changed(ref.name)
        return url

    async def delete(self, ref: FunctionRef) -> None:
        qualifier = self._resolve(ref)
        async with self._writing:
            if (ref.name, qualifier) not in self._urls:
                raise _no_url()
            await self._functions.run(self._store.delete, ref.name, qualifier)
            self.forget(ref.name, qualifier)
        await self._functions.changed(ref.name)

    def forget(self, name: str, qualifier: str) -> None:
        """Drop a deleted alias's URL from memory (the store deleted it with the alias)."""
        url = self._urls.pop((name, qualifier), None)
        if url is not None:
            self._by_id.pop(url.url_id, None)

    def forget_function(self, name: str) -> None:
        for name_, qualifier in [k for k in self._urls if k[0] == name]:
            self.forget(name_, qualifier)

    # -- internals -----------------------------------------------------------------

    def _keep(self, url: FunctionUrl) -> None:
        self._urls[(url.function_name, url.qualifier)] = url
        self._by_id[url.url_id] = url

    def _resolve(self, ref: FunctionRef) -> str:
        """The qualifier `ref` names (`$LATEST` when none): `$LATEST` or an existing alias."""
        if ref.qualifier is not None:
            c = v.Constraints()
            c.string(ref.qualifier, "qualifier", max_len=128, pattern=_QUALIFIER)
            c.check()
        self._functions.require(ref.name)
        qualifier = ref.qualifier or LATEST
        if qualifier != LATEST:
            try:
                self._functions.aliases.get(ref.name, qualifier)
            except ResourceNotFoundError:
                raise self._function_not_found(ref.name, qualifier) from None
        return qualifier

    def _function_not_found(self, name: str, qualifier: str) -> ResourceNotFoundError:
        return ResourceNotFoundError(f"Function not found: {self._functions.arn(name, qualifier)}")

    def _exists(self, name: str, qualifier: str) -> ResourceConflictError:
        # Lambda's wording (the double space included).
        arn = self._functions.arn(name, None if qualifier == LATEST else qualifier)
        return ResourceConflictError(
            f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
            "FunctionUrlConfig exists for this Lambda function"
        )


def _no_url() -> ResourceNotFoundError:
    return ResourceNotFoundError("The resource you requested does not exist.")


def _auth_type(c: v.Constraints, value: Any, *, required: bool) -> str | None:
    if value is None:
        if required:
            c.fail(None, "authType", "Member must not be null")
        return None
    if value not in AUTH_TYPES:
        c.fail(value, "authType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
        return None
    return str(value)


def _invoke_mode(c: v.Constraints, value: Any) -> str | None:
    if value is None:
        return None
    if value not in INVOKE_MODES:
        c.fail(
            value, "invokeMode", "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]"
        )
        return None
    return str(value)


def _cors(c: v.Constraints, value: Any) -> UrlCors | None:
    """A Cors structure, checked against the model's constraints (None: not given)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "cors", "Member must be a structure")
        return None
    unknown = sorted(k for k in value if k not in _CORS_MEMBERS)
    if unknown:
        raise InvalidParameterValueError(f"Cors has no member {', '.join(unknown)}.")
    fields: dict[str, Any] = {}
    credentials = value.get("AllowCredentials")
    if credentials is not None and not isinstance(credentials, bool):
        c.fail(credentials, "cors.allowCredentials", "Member must be a boolean")
    else:
        fields["allow_credentials"] = credentials
    if value.get("MaxAge") is not None:
        fields["max_age"] = c.integer(value["MaxAge"], "cors.maxAge", 0, _CORS_MAX_AGE)
    for member, name, where, most, longest, shortest in _CORS_LISTS:
        items = value.get(member)
        if items is None:
            continue
        if not isinstance(items, list):
            c.fail(items, where, "Member must be a list")
            continue
        if len(items) > most:
            c.fail(items, where, f"Member must have length less than or equal to {most}")
            continue
        good = True
        for item in items:
            if not isinstance(item, str):
                c.fail(items, where, "Member must satisfy constraint: [Member must be a string]")
                good = False
            elif len(item) > longest:
                c.fail(
                    items,
                    where,
                    "Member must satisfy constraint: [Member must have length less than or "
                    f"equal to {longest}]",
                )
                good = False
            elif len(item) < shortest:
                c.fail(
                    items,
                    where,
                    "Member must satisfy constraint: [Member must have length greater than or "
                    f"equal to {shortest}]",
                )
                good = False
        if good:
            fields[name] = tuple(items)
    methods = fields.get("allow_methods") or ()
    bad = [m for m in methods if m.upper() not in CORS_METHODS]
    if bad:
        raise InvalidParameterValueError(
            f"Cors.AllowMethods has {', '.join(bad)}: each must be one of "
            f"{', '.join(CORS_METHODS)}."
        )
    return UrlCors(**fields)
