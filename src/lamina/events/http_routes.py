"""HTTP routes: API Gateway HTTP API routes (`GET /items/{id}`, `ANY /proxy/{proxy+}`,
`$default`), each sending its requests to a function in payload format 1.0 or 2.0.

The routes live in one JSON file (`<data-dir>/routes.json`, or the file `lamina serve --routes`
names), which Lamina reads at start-up and rewrites (atomically) when routes are added or
removed through `/lamina/routes` (`lamina routes add|rm`):

    {"stage": "$default", "routes": [
        {"routeKey": "GET /items/{id}", "function": "items", "payloadFormatVersion": "2.0"},
        {"routeKey": "$default", "function": "fallback:live", "payloadFormatVersion": "1.0"}]}

`function` is a function name or ARN, optionally qualified (`name:alias`). The stage is
`$default` unless the file names another; `$default` is served at `<endpoint>/_http/<path>`,
another stage at `<endpoint>/_http/<stage>/<path>`.

In a cluster (`lamina serve --cluster`) every node serves the same routes from the shared
database (`store.http_routes`); the file then only seeds a database that has none.

The most specific route wins, as in API Gateway: segment by segment, a literal before a
`{param}` before a greedy `{proxy+}`; then a route of the request's method before `ANY`; and
`$default` only when nothing else matches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import string
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lamina.arns import parse_function_ref
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes
from lamina.control.changes import CONCURRENT_CHANGE
from lamina.errors import (
    InvalidParameterValueError,
    LaminaError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LATEST
from lamina.settings import Settings

if TYPE_CHECKING:
    from lamina.control import FunctionService
    from lamina.store.http_routes import RouteStore

DEFAULT_ROUTE = "$default"
DEFAULT_STAGE = "$default"
PAYLOAD_FORMATS = ("1.0", "2.0")
METHODS = ("ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()*,;=:@-]+")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}")
_STAGE = re.compile(r"\$default|[A-Za-z0-9_-]{1,128}")
_API_ID_ALPHABET = string.ascii_lowercase + string.digits

log = logging.getLogger(__name__)


class Segment(IntEnum):
    """What one segment of a route's path is, in order of precedence (lower wins)."""

    LITERAL = 0
    PARAM = 1
    GREEDY = 2


@dataclass(frozen=True)
class Route:
    route_key: str
    #: the function's name and qualifier (None: unqualified)
    function_name: str
    qualifier: str | None
    payload_format: str
    #: the function as the route names it (kept as given, for listing)
    function: str
    #: None for `$default`
    method: str | None = None
    path: str = ""
    #: (kind, literal text or parameter name) per path segment
    segments: tuple[tuple[Segment, str], ...] = ()

    def match(self, method: str, parts: list[str]) -> dict[str, str] | None:
        """The path parameters if this route takes `method` on the path `parts`, else None."""
        if self.method is None or self.method not in ("ANY", method):
            return None
        params: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind is Segment.GREEDY:
                rest = parts[i:]
                if not rest or not all(rest):
                    return None
                params[text] = unquote("/".join(rest))
                return params
            if i >= len(parts):
                return None
            if kind is Segment.LITERAL:
                if parts[i] != text:
                    return None
            elif not parts[i]:
                return None
            else:
                params[text] = unquote(parts[i])
        return params if len(parts) == len(self.segments) else None

    def rank(self) -> tuple[tuple[int, ...], int]:
        """Sort key: the more specific route first."""
        return tuple(int(kind) for kind, _ in self.segments), int(self.method == "ANY")

    def shape(self) -> str:
        """The route key with parameter names left out: two routes of one shape would take
        the same requests."""
        if self.method is None:
            return DEFAULT_ROUTE
        shown = {Segment.PARAM: "{}", Segment.GREEDY: "{+}"}
        parts = [shown.get(kind, text) for kind, text in self.segments]
        return f"{self.method} /" + "/".join(parts)

    def spec(self) -> dict[str, str]:
        """The route as the file (and `/lamina/routes`) spell it."""
        return {
            "routeKey": self.route_key,
            "function": self.function,
            "payloadFormatVersion": self.payload_format,
        }


def path_parts(path: str) -> list[str]:
    """A request path (raw, percent-encoded) as segments: "/" is none."""
    return [] if path in ("", "/") else path.split("/")[1:]


def parse_route(spec: Any, settings: Settings) -> Route:
    """A route spec ({"routeKey", "function", "payloadFormatVersion"}), checked;
    InvalidParameterValueException naming the problem if it is not a route."""
    if not isinstance(spec, dict):
        raise InvalidParameterValueError(
            "A route is an object with routeKey, function and payloadFormatVersion."
        )
    unknown = sorted(set(spec) - {"routeKey", "function", "payloadFormatVersion"})
    if unknown:
        raise InvalidParameterValueError(f"A route has no member {', '.join(unknown)}.")
    key = spec.get("routeKey")
    function = spec.get("function")
    payload_format = spec.get("payloadFormatVersion", "2.0")
    if not isinstance(key, str) or not key:
        raise InvalidParameterValueError("A route needs a routeKey, such as 'GET /items/{id}'.")
    if payload_format not in PAYLOAD_FORMATS:
        raise InvalidParameterValueError(
            f"Route {key}: payloadFormatVersion {payload_format!r} is neither 1.0 nor 2.0."
        )
    if not isinstance(function, str) or not function:
        raise InvalidParameterValueError(f"Route {key}: it needs a function (a name or ARN).")
    try:
        ref = parse_function_ref(
            function, region=settings.region, account=settings.account_id, field_name="function"
        )
    except LaminaError as e:
        raise InvalidParameterValueError(f"Route {key}: {e.message}") from None
    qualifier = None if ref.qualifier in (None, LATEST) else ref.qualifier
    common = {
        "route_key": key,
        "function_name": ref.name,
        "qualifier": qualifier,
        "payload_format": payload_format,
        "function": function,
    }
    if key == DEFAULT_ROUTE:
        return Route(**common)
    method, sep, path = key.partition(" ")
    if not sep or method not in METHODS:
        raise InvalidParameterValueError(
            f"Route key {key!r} is neither $default nor 'METHOD /path' with METHOD one of "
            f"{', '.join(METHODS)}."
        )
    return Route(**common, method=method, path=path, segments=_segments(key, path))


def _segments(key: str, path: str) -> tuple[tuple[Segment, str], ...]:
    if not path.startswith("/"):
        raise InvalidParameterValueError(f"Route key {key!r}: the path must start with '/'.")
    if path == "/":
        return ()
    found: list[tuple[Segment, str]] = []
    names: set[str] = set()
    parts = path[1:].split("/")
    for i, part in enumerate(parts):
        if not part:
            raise InvalidParameterValueError(
                f"Route key {key!r}: empty path segment (a doubled or trailing '/')."
            )
        param = _PARAM.fullmatch(part)
        if param is not None:
            name, greedy = param[1], bool(param[2])
            if name in names:
                raise InvalidParameterValueError(
                    f"Route key {key!r}: path parameter {{{name}}} appears twice."
                )
            if greedy and i != len(parts) - 1:
                raise InvalidParameterValueError(
                    f"Route key {key!r}: the greedy parameter {{{name}+}} must be the last segment."
                )
            names.add(name)
            found.append((Segment.GREEDY if greedy else Segment.PARAM, name))
        elif "{" in part or "}" in part:
            raise InvalidParameterValueError(
                f"Route key {key!r}: segment {part!r} is not a literal or a whole "
                "{parameter} (names: letters, digits and _)."
            )
        elif not _LITERAL.fullmatch(part):
            raise InvalidParameterValueError(
                f"Route key {key!r}: segment {part!r} has characters a path segment cannot."
            )
        else:
            found.append((Segment.LITERAL, part))
    return tuple(found)


class RouteTable:
    """Routes, ordered for matching."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        self._ordered = sorted((r for r in routes if r.method is not None), key=Route.rank)
        self._default = next((r for r in routes if r.method is None), None)

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        parts = path_parts(raw_path)
        for route in self._ordered:
            params = route.match(method, parts)
            if params is not None:
                return route, params
        return (self._default, {}) if self._default is not None else None


class HttpRoutes:
    """The routes and the table served from them. Changes are written before they take
    effect, one at a time: to the route file, or in a cluster (`store`) to the database,
    which the file only seeds."""

    def __init__(
        self, settings: Settings, functions: FunctionService, store: RouteStore | None = None
    ) -> None:
        self._settings = settings
        self._functions = functions
        self._store = store
        #: the database's revision of what is served (with a store)
        self._revision: int | None = None
        self.path = settings.routes_path
        self.stage = DEFAULT_STAGE
        self.api_id = ""
        self.table = RouteTable([])
        self._writing = asyncio.Lock()
        #: the other nodes (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    async def load(self) -> None:
        """Read the routes: the route file (none yet: no routes), or with a store the
        database's, which the file seeds if it has none. ValueError naming the file (or the
        database) and the problem if they are not routes."""
        if self._store is not None and await self._load_stored():
            return
        raw = await asyncio.to_thread(_read, self.path)
        self._take(*self._parse({} if raw is None else raw, str(self.path)))
        if self._store is not None:
            # The first node to start seeds the database; a node that lost that race serves
            # what the winner stored.
            revision = await asyncio.to_thread(self._store.write, self._document(), None)
            if revision is None:
                await self._load_stored()
            else:
                self._revision = revision

    async def _load_stored(self) -> bool:
        assert self._store is not None
        found = await asyncio.to_thread(self._store.read)
        if found is None:
            return False
        document, revision = found
        self._take(*self._parse(document, "the routes in the database"))
        self._revision = revision
        return True

    def _parse(self, data: Any, where: str) -> tuple[str, str, list[Route]]:
        try:
            if not isinstance(data, dict):
                raise InvalidParameterValueError("the file must hold a JSON object")
            stage = data.get("stage", DEFAULT_STAGE)
            if not isinstance(stage, str) or not _STAGE.fullmatch(stage):
                raise InvalidParameterValueError(
                    f"stage {stage!r} must be $default or letters, digits, - and _"
                )
            specs = data.get("routes", [])
            if not isinstance(specs, list):
                raise InvalidParameterValueError("routes must be a list")
            routes = [parse_route(spec, self._settings) for spec in specs]
            _check_distinct(routes)
        except LaminaError as e:
            raise ValueError(f"{where}: {e.message}") from None
        api_id = data.get("apiId")
        return stage, api_id if isinstance(api_id, str) and api_id else _new_api_id(), routes

    def _take(self, stage: str, api_id: str, routes: list[Route]) -> None:
        self.stage = stage
        self.api_id = api_id
        self.table = RouteTable(routes)

    def base_path(self) -> str:
        """Where the stage is served on this server's port."""
        return "/_http" if self.stage == DEFAULT_STAGE else f"/_http/{self.stage}"

    async def add(self, spec: Any) -> Route:
        route = parse_route(spec, self._settings)
        if self._functions.latest(route.function_name) is None:
            raise ResourceNotFoundError(
                f"Route {route.route_key}: function {route.function_name} does not exist."
            )
        async with self._writing:
            routes = [*self.table.routes, route]
            _check_distinct(routes)
            await self._save(routes)
        await changes.tell(self.feed, "route", "*")
        return route

    async def remove(self, route_key: str) -> None:
        async with self._writing:
            routes = [r for r in self.table.routes if r.route_key != route_key]
            if len(routes) == len(self.table.routes):
                raise ResourceNotFoundError(f"There is no route {route_key}.")
            await self._save(routes)
        await changes.tell(self.feed, "route", "*")

    async def refresh(self, key: str) -> None:
        """Another node changed the routes: read them again (from the database; without
        one, from the route file, which only nodes sharing it see changed). Routes that no
        longer read leave the table served now as it is."""
        async with self._writing:
            try:
                await self.load()
            except ValueError as e:
                log.error("the routes another node wrote cannot be read: %s", e)

    def _document(self, routes: list[Route] | None = None) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "apiId": self.api_id,
            "routes": [r.spec() for r in (self.table.routes if routes is None else routes)],
        }

    async def _save(self, routes: list[Route]) -> None:
        data = self._document(routes)
        if self._store is None:
            await asyncio.to_thread(_write, self.path, data)
        else:
            revision = await asyncio.to_thread(self._store.write, data, self._revision)
            if revision is None:
                # Another node changed the routes since they were read here.
                await self._load_stored()
                raise ResourceConflictError(CONCURRENT_CHANGE)
            self._revision = revision
        self.table = RouteTable(routes)


def _check_distinct(routes: list[Route]) -> None:
    seen: dict[str, str] = {}
    for route in routes:
        shape = route.shape()
        if shape in seen:
            what = (
                "already exists"
                if seen[shape] == route.route_key
                else f"would take the same requests as {seen[shape]}"
            )
            raise ResourceConflictError(f"Route {route.route_key} {what}.")
        seen[shape] = route.route_key


def _new_api_id() -> str:
    """An id like API Gateway's: 10 lower-case letters and digits."""
    return "".join(secrets.choice(_API_ID_ALPHABET) for _ in range(10))


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace the file at once (a crash leaves the old file or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".routes-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
