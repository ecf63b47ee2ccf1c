"""Lamina's Python runtime: a plain client of the Lambda Runtime API (standard library only).

Started inside an execution environment as `python -B bootstrap.py`. It reads the environment
Lambda defines (`AWS_LAMBDA_RUNTIME_API`, `_HANDLER`, `LAMBDA_TASK_ROOT`, ...), imports the
handler, then loops: GET the next invocation, call `handler(event, context)`, POST the result
or the error. Import failures are reported to `/runtime/init/error` and end the process, as
AWS's Python runtime does.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib
import json
import logging
import os
import random
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

# Imported ahead of the handler: `import snapshot_restore_py` finds it in every environment.
try:
    import snapshot_restore_py  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # imported as part of Lamina's package (the fake sandbox)
    from lamina.runtimes.python import snapshot_restore_py

API_PREFIX = "/2018-06-01/runtime"
Handler = Callable[[Any, Any], Any]


class Headers(dict[str, str]):
    """Response headers, looked up case-insensitively (keys are stored lower-cased)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class RuntimeClient:
    """One keep-alive HTTP/1.1 connection to the Runtime API.

    A deliberately small client over a raw socket: the Runtime API is a fixed, local peer, and
    `http.client` (which parses every header through the email package) costs more per
    invocation than a no-op handler does.
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._address = (host.strip("[]"), int(port))
        self._host = address.encode()
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        global _preconnected
        if _preconnected is not None and _preconnected[0] == self._address:
            # Connected ahead, while the environment waited in its pool (see `preconnect`).
            sock = _preconnected[1]
            _preconnected = None
            self._sock = sock
            self._buf = b""
            return sock
        host, port = self._address
        try:
            # An IPv4 literal (Lamina's is 127.0.0.1:9001): connect without getaddrinfo(),
            # whose first call loads the C library's name-service machinery (~3 ms).
            socket.inet_aton(host)
        except OSError:
            sock = socket.create_connection(self._address)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buf = b""
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Headers, bytes]:
        head = [f"{method} {API_PREFIX}{path} HTTP/1.1".encode(), b"Host: " + self._host]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        if method != "GET":
            head.append(b"Content-Length: " + str(len(body)).encode())
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
            return self._read_response(sock)
        except OSError:
            self.close()
            raise

    def _read_response(self, sock: socket.socket) -> tuple[int, Headers, bytes]:
        buf = self._buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("Runtime API closed the connection")
            buf += chunk
        lines = buf[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = Headers()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body_start = end + 4
        while len(buf) - body_start < length:
            chunk = sock.recv(max(65536, length - (len(buf) - body_start)))
            if not chunk:
                raise ConnectionError("Runtime API closed the connection")
            buf += chunk
        self._buf = buf[body_start + length :]
        if headers.get("connection", "").lower() == "close":
            sock.close()
            self._sock = None
        return status, headers, buf[body_start : body_start + length]

    def next(self) -> tuple[Headers, bytes]:
        status, headers, body = self._request("GET", "/invocation/next")
        if status != 200:
            raise RuntimeError(f"Runtime API /invocation/next answered {status}: {body!r}")
        return headers, body

    def post_response(self, request_id: str, body: bytes) -> None:
        self._request(
            "POST",
            f"/invocation/{request_id}/response",
            body,
            {"Content-Type": "application/json"},
        )

    def post_error(self, request_id: str, error: dict[str, Any]) -> None:
        self._post_error(f"/invocation/{request_id}/error", error)

    def post_init_error(self, error: dict[str, Any]) -> None:
        self._post_error("/init/error", error)

    def restore_next(self) -> None:
        """SnapStart: the restore is done (Lambda's answer comes once it is); the runtime
        runs its after-restore hooks next."""
        status, _headers, body = self._request("GET", "/restore/next")
        if not 200 <= status < 300:
            raise RuntimeError(f"Runtime API /restore/next answered {status}: {body!r}")

    def post_restore_error(self, error: dict[str, Any]) -> None:
        self._post_error("/restore/error", error)

    def _post_error(self, path: str, error: dict[str, Any]) -> None:
        self._request(
            "POST",
            path,
            json.dumps(error).encode(),
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Function-Error-Type": str(error.get("errorType", "Unhandled")),
            },
        )


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data: dict[str, Any]) -> None:
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class Client:
    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        self.installation_id = data.get("installation_id")
        self.app_title = data.get("app_title")
        self.app_version_name = data.get("app_version_name")
        self.app_version_code = data.get("app_version_code")
        self.app_package_name = data.get("app_package_name")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data: dict[str, Any]) -> None:
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    """The `context` argument, with the attributes Lambda's Python runtime gives it."""

    def __init__(
        self,
        request_id: str,
        deadline_ms: int,
        invoked_arn: str,
        headers: Any,
        env: Mapping[str, str],
    ) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = deadline_ms
        identity = headers.get("Lambda-Runtime-Cognito-Identity")
        self.identity = CognitoIdentity(json.loads(identity)) if identity else None
        client_context = headers.get("Lambda-Runtime-Client-Context")
        self.client_context = ClientContext(json.loads(client_context)) if client_context else None
        #: the caller's tenant (Invoke's TenantId), None when it named none
        self.tenant_id = headers.get("Lambda-Runtime-Aws-Tenant-Id")

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"function_name={self.function_name},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


class InitError(Exception):
    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []

    def to_json(self) -> dict[str, Any]:
        return {
            "errorMessage": self.message,
            "errorType": self.error_type,
            "requestId": "",
            "stackTrace": self.stack,
        }


def load_handler(spec: str) -> Handler:
    """Import `module.function` (module may be a dotted or slash-separated path)."""
    try:
        module_path, func_name = spec.rsplit(".", 1)
    except ValueError as e:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {e}") from None
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}"
        ) from None
    except SyntaxError as e:
        raise InitError(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {e}",
            _stack(e),
        ) from None
    except Exception as e:
        raise InitError(type(e).__name__, str(e), _stack(e)) from None
    handler = getattr(module, func_name, None)
    if handler is None:
        raise InitError(
            "Runtime.HandlerNotFound", f"Handler '{func_name}' missing on module '{module_name}'"
        )
    if not callable(handler):
        raise InitError(
            "Runtime.HandlerNotFound",
            f"Handler '{func_name}' on module '{module_name}' is not callable",
        )
    return handler  # type: ignore[no-any-return]


def _stack(e: BaseException) -> list[str]:
    frames = traceback.extract_tb(e.__traceback__)
    # Drop this file's own frames: the user sees where their code failed.
    own = os.path.abspath(__file__)
    return traceback.format_list([f for f in frames if os.path.abspath(f.filename) != own])


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def serve(
    client: RuntimeClient, handler: Handler, env: MutableMapping[str, str] = os.environ
) -> None:
    """The invocation loop: runs until the Runtime API goes away.

    `env` is the function's environment (the process's own, except in the fake sandbox).
    """
    while True:
        try:
            headers, body = client.next()
        except OSError:
            return  # the environment is being shut down
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        _RequestIdFilter.request_id = request_id
        context = LambdaContext(
            request_id,
            int(headers.get("Lambda-Runtime-Deadline-Ms", "0")),
            headers.get("Lambda-Runtime-Invoked-Function-Arn", ""),
            headers,
            env,
        )
        trace_id = headers.get("Lambda-Runtime-Trace-Id")
        if trace_id:
            env["_X_AMZN_TRACE_ID"] = trace_id
        else:
            env.pop("_X_AMZN_TRACE_ID", None)
        try:
            event = json.loads(body) if body else {}
            result = handler(event, context)
        except Exception as e:
            _post_error(client, request_id, type(e).__name__, str(e), _stack(e))
            continue
        try:
            payload = json.dumps(result, default=_json_default).encode()
        except (TypeError, ValueError) as e:
            _post_error(
                client, request_id, "Runtime.MarshalError", f"Unable to marshal response: {e}", []
            )
            continue
        try:
            client.post_response(request_id, payload)
        except OSError:
            return


def _post_error(
    client: RuntimeClient, request_id: str, kind: str, message: str, stack: list[str]
) -> None:
    error = {
        "errorMessage": message,
        "errorType": kind,
        "requestId": request_id,
        "stackTrace": stack,
    }
    _log_error(kind, message, stack)
    with contextlib.suppress(OSError):
        client.post_error(request_id, error)


def _log_error(kind: str, message: str, stack: list[str]) -> None:
    """Lambda's Python runtime logs an unhandled error with its traceback (one JSON record
    in JSON log format)."""
    if _json_logs:
        record = {
            "timestamp": _iso_time(time.time()),
            "level": "ERROR",
            "message": message,
            "errorType": kind,
            "errorMessage": message,
            "requestId": _RequestIdFilter.request_id,
            "stackTrace": stack,
        }
        print(json.dumps(record, default=str), flush=True)
        return
    text = f"[ERROR] {kind}: {message}"
    if stack:
        text += "\nTraceback (most recent call last):\n" + "".join(stack).rstrip("\n")
    print(text, flush=True)


class _RequestIdFilter(logging.Filter):
    """Gives every record the id of the invocation running now (empty during init)."""

    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _RequestIdFilter.request_id
        return True


#: Lambda's level names for Python's levels, and back (TRACE is finer than DEBUG)
_TRACE = 5
_LAMBDA_LEVELS = {
    _TRACE: "TRACE",
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}
_PYTHON_LEVELS = {name: level for level, name in _LAMBDA_LEVELS.items()}
#: the attributes every LogRecord has; any other one came from `extra=` and is logged too
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "aws_request_id",
}
_json_logs = False


def _iso_time(seconds: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """Lambda's JSON log records: timestamp, level, message, logger, requestId, the fields
    given with `extra=`, and the error of `exc_info` as errorType/errorMessage/stackTrace."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _iso_time(record.created),
            "level": _LAMBDA_LEVELS.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": getattr(record, "aws_request_id", ""),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS:
                out[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            out["errorType"] = type(error).__name__
            out["errorMessage"] = str(error)
            out["stackTrace"] = traceback.format_tb(error.__traceback__)
        out["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        return json.dumps(out, default=str)


def configure_logging(env: Mapping[str, str]) -> None:
    """Apply the function's LoggingConfig, which the environment tells: in JSON format
    (AWS_LAMBDA_LOG_FORMAT) records are JSON and the root logger's level is
    AWS_LAMBDA_LOG_LEVEL (INFO unless set), as on Lambda; in Text format nothing changes."""
    global _json_logs
    _json_logs = env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    if not _json_logs:
        return
    logging.addLevelName(_TRACE, "TRACE")
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "lambda_runtime", False):
            handler.setFormatter(JsonFormatter())
    level = env.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    root.setLevel(_PYTHON_LEVELS.get(level, logging.INFO))


def install_logging() -> None:
    """Lambda's Python logging: a root handler writing `[LEVEL]\tUTC time\trequest id\tmessage`.

    As on Lambda, the root logger's level is left as Python's default (WARNING), so
    `logger.setLevel(logging.INFO)` is what makes INFO records appear.
    """
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    handler.lambda_runtime = True  # type: ignore[attr-defined]  # configure_logging finds it
    logging.getLogger().addHandler(handler)


_prepared = False


#: a connection to the Runtime API made ahead of need: (address, socket)
_preconnected: tuple[tuple[str, int], socket.socket] | None = None


def preconnect(address: str) -> None:
    """Connect to the Runtime API at `address` ahead of need: Lamina's zygote calls it in
    environments waiting in its pool, whose Runtime API listener already exists (the server
    accepts the connection when the environment is claimed), so that a cold start does not
    wait for a connect and an accept. Best effort: without it, the first request connects."""
    global _preconnected
    host, _, port = address.rpartition(":")
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((host, int(port)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            raise
    except (OSError, ValueError):
        return
    _preconnected = ((host, int(port)), sock)


def prepare() -> None:
    """Set up what does not depend on the function: line-buffered stdout and Lambda's log
    format. Lamina's zygote calls it ahead of need, in environments waiting in its pool."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    install_logging()


def start_debugger(env: Mapping[str, str]) -> None:
    """Debug mode (Lamina's `_LAMINA_DEBUG`): start debugpy listening on the sandbox's
    loopback before the handler is imported, and wait for a client if asked to. debugpy comes
    from Lamina's runtime directory, not the function's code, and leaves sys.path as it was."""
    mode = env.get("_LAMINA_DEBUG")
    if not mode:
        return
    where = env.get("_LAMINA_DEBUGPY", "")
    sys.path.insert(0, where)
    try:
        import debugpy  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        print(f"[WARN] Lamina: debugpy is not available ({e}); running without a debugger")
        return
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(where)
    port = int(env.get("_LAMINA_DEBUG_PORT", "5678"))
    debugpy.listen(("127.0.0.1", port))
    if mode == "wait":
        debugpy.wait_for_client()


#: SnapStart (Lamina sets it in a template's runtime, see `lamina.sandbox.api`): called once
#: the function is initialised and its before-snapshot hooks have run; returns in each
#: restored copy (never in the template), with `os.environ` the copy's own
snapshot_point: Callable[[], None] | None = None


def _run_hooks(hooks: list[Any], kind: str, report: Callable[[dict[str, Any]], None]) -> None:
    """Run SnapStart hooks in order; the first that raises is logged and reported as `kind`
    through `report` (the Runtime API's error call), and the runtime exits, as AWS's does."""
    try:
        for func, args, kwargs in hooks:
            func(*args, **kwargs)
    except Exception as e:
        error = InitError(kind, f"{type(e).__name__}: {e}", _stack(e)).to_json()
        _log_error(error["errorType"], error["errorMessage"], error["stackTrace"])
        with contextlib.suppress(OSError):
            report(error)
        sys.exit(1)


def snap_start(client: RuntimeClient) -> RuntimeClient:
    """A SnapStart template's way from its init to its first invocation: run the
    before-snapshot hooks, stop at the snapshot point, and (in each restored copy) take the
    copy's own Runtime API, reseed `random` (a copy must not repeat its siblings' numbers),
    say the restore is done and run the after-restore hooks. Returns the copy's client."""
    assert snapshot_point is not None
    before = snapshot_restore_py.get_before_snapshot()
    _run_hooks(before, "Runtime.BeforeSnapshotError", client.post_init_error)
    global _preconnected
    client.close()  # no connection survives a snapshot (a copy makes its own)
    if _preconnected is not None:
        _preconnected[1].close()
        _preconnected = None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    snapshot_point()
    random.seed()
    configure_logging(os.environ)
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    client.restore_next()
    after = snapshot_restore_py.get_after_restore()
    _run_hooks(after, "Runtime.AfterRestoreError", client.post_restore_error)
    return client


def main() -> None:
    # Make the function's code, not this runtime's directory, the first place imports look.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    prepare()
    configure_logging(os.environ)
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    start_debugger(os.environ)
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except InitError as e:
        _log_error(e.error_type, e.message, e.stack)
        client.post_init_error(e.to_json())
        sys.exit(1)
    if snapshot_point is not None and os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == (
        "snap-start"
    ):
        client = snap_start(client)
    serve(client, handler)


if __name__ == "__main__":
    main()
