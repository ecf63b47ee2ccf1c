"""What provisioning needs from the server: its public APIs over HTTP, errors as exceptions.

`StackClient` wraps the CLI's signed client (`lamina.cli.main.Api`, through its `request`
method, or anything with that method): provisioning catches a failed call to roll back,
where the CLI's own `call` would end the process.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

FN = "/2015-03-31/functions"


class Response(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> Any: ...

    @property
    def content(self) -> bytes: ...

    def json(self) -> Any: ...


class Transport(Protocol):
    """`lamina.cli.main.Api` is one."""

    endpoint: str

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response: ...


class ApiError(Exception):
    """A call the server refused: its AWS error type and message."""

    def __init__(self, kind: str, message: str, status: int) -> None:
        self.kind = kind
        self.message = message
        self.status = status
        super().__init__(f"{kind}: {message}")


class StackClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.endpoint = transport.endpoint

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        ok_missing: bool = False,
    ) -> Any:
        """The JSON answer (None if empty). Raises `ApiError`; with `ok_missing`, a
        ResourceNotFoundException answers None instead."""
        resp = self._request(method, path, json_body=body, params=params)
        return self._answer(resp, ok_missing)

    def _request(self, method: str, path: str, **kwargs: Any) -> Response:
        import httpx

        try:
            return self.transport.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ApiError("ConnectionError", f"cannot reach {self.endpoint}: {e}", 0) from None

    def events(self, operation: str, body: dict[str, Any]) -> Any:
        """An EventBridge operation (AWS JSON 1.1 on the server's own port)."""
        resp = self._request(
            "POST",
            "/",
            content=json.dumps(body).encode(),
            headers={
                "X-Amz-Target": f"AWSEvents.{operation}",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        return self._answer(resp, False)

    def download(self, url: str) -> bytes:
        """A package the server serves (GetFunction's `Code.Location`)."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        resp = self._request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        if resp.status_code >= 400:
            raise ApiError("ResourceNotFoundException", f"cannot download {url}", resp.status_code)
        return bytes(resp.content)

    def wait_ready(self, name: str) -> dict[str, Any]:
        """Wait for function `name` to be Active with no update in progress."""
        for _ in range(1200):
            config: dict[str, Any] = self.call("GET", f"{FN}/{name}/configuration")
            if config.get("State") == "Active" and config.get("LastUpdateStatus") != "InProgress":
                return config
            if "Failed" in (config.get("State"), config.get("LastUpdateStatus")):
                reason = config.get("StateReason") or config.get("LastUpdateStatusReason")
                raise ApiError("FunctionFailed", f"{name}: {reason}", 0)
            time.sleep(0.1)
        raise ApiError("Timeout", f"{name} did not become active", 0)

    @staticmethod
    def _answer(resp: Response, ok_missing: bool) -> Any:
        if resp.status_code >= 400:
            kind = resp.headers.get("x-amzn-ErrorType") or ""
            try:
                data = resp.json()
            except ValueError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            kind = kind.split(":")[0] or str(data.get("__type", f"HTTP {resp.status_code}"))
            if ok_missing and kind.endswith("ResourceNotFoundException"):
                return None
            message = data.get("message") or data.get("Message") or resp.text
            raise ApiError(kind, str(message), resp.status_code)
        if not resp.text:
            return None
        try:
            return resp.json()
        except ValueError:
            return None
