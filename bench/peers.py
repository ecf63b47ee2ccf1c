"""serverless-offline, the peer the warm benchmark (bench/invoke.py --peers) measures beside Lamina.

Serverless Framework v3 with serverless-offline 13, installed from npm into the git-ignored
scratch directory `bench/.peers/peers-hello/` on first use, with two functions, a python3.11
one (`py`, the issue's peer) and a nodejs20.x one (`js`), invoked through its Lambda Invoke API
on 127.0.0.1:3002 (its HTTP API is on :3000). It isolates nothing (handlers run in worker
processes it keeps, sharing the host) and checks no signature: it is the unisolated emulator
Lamina is compared with. bench/README.md repeats how to set it up by hand.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

# bench/ is on sys.path: the benchmarks are run as scripts from it.
from harness import BenchError, Server, log, port_in_use, start_server, stop_server, wait_ready

NPM_TIMEOUT_S = 900.0
# npm init -y names the package after its directory, and ".peers" is not a valid name.
PEERS_DIR = Path(__file__).resolve().parent / ".peers" / "peers-hello"
PEER_NAME = "serverless-offline"
PEER_PORTS = (3000, 3002)
#: the Invoke URL of each of the peer's functions, by runtime
PEER_URLS = {
    "python3.11": "http://127.0.0.1:3002/2015-03-31/functions/peers-hello-dev-py/invocations",
    "nodejs20.x": "http://127.0.0.1:3002/2015-03-31/functions/peers-hello-dev-js/invocations",
}
NPM_STEPS = (["npm", "init", "-y"], ["npm", "install", "serverless@3", "serverless-offline@13"])
PEER_ENV = {
    "SLS_TELEMETRY_DISABLED": "1",
    "SLS_NOTIFICATIONS_MODE": "off",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PEER_HANDLER_PY = 'def handler(event, context):\n    return {"statusCode": 200, "body": "ok"}\n'
PEER_HANDLER_JS = 'exports.handler = async () => ({ statusCode: 200, body: "ok" });\n'
PEER_SERVERLESS_YML = """\
service: peers-hello
frameworkVersion: '3'
provider: {name: aws, region: us-east-1, stage: dev}
functions:
  py:
    runtime: python3.11
    handler: handler.handler
    events: [{httpApi: {path: /py, method: get}}]
  js:
    runtime: nodejs20.x
    handler: handler_js.handler
    events: [{httpApi: {path: /js, method: get}}]
plugins: [serverless-offline]
custom:
  serverless-offline: {host: 127.0.0.1, httpPort: 3000, lambdaPort: 3002, noPrependStageInUrl: true}
"""


def _installed() -> bool:
    modules = PEERS_DIR / "node_modules"
    return (modules / "serverless/bin/serverless.js").is_file() and (
        modules / "serverless-offline/package.json"
    ).is_file()


def prepare_peer() -> str | None:
    """Write the peer's files and npm-install it if needed; return why it can't run, or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y nodejs npm)"
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERS_DIR / "handler.py").write_text(PEER_HANDLER_PY)
    (PEERS_DIR / "handler_js.js").write_text(PEER_HANDLER_JS)
    (PEERS_DIR / "serverless.yml").write_text(PEER_SERVERLESS_YML)
    if _installed():
        return None
    for argv in NPM_STEPS:
        log(f"{PEER_NAME}: running {' '.join(argv)} in {PEERS_DIR} (may take minutes)")
        try:
            done = subprocess.run(
                argv, cwd=PEERS_DIR, capture_output=True, text=True, timeout=NPM_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)} failed: {exc}"
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            return f"{' '.join(argv)} exited with status {done.returncode}:\n{output}"
    return None


def peer_installed_or_skipped() -> bool:
    """Install the peer if needed (before any server starts); False, saying why, if it can't."""
    why = prepare_peer()
    if why is not None:
        log(f"{PEER_NAME} skipped: {why}")
    return why is None


def _invokes(url: str) -> bool:
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return bool(response.status == 200)
    except (urllib.error.URLError, HTTPException, OSError):
        return False


def start_peer(stack: contextlib.ExitStack, tmp: Path) -> Server:
    """serverless-offline, running, each function invoked once (its first invoke starts a
    worker), stopped with `stack`."""
    busy = [port for port in PEER_PORTS if port_in_use(port)]
    if busy:
        raise BenchError(f"{PEER_NAME} needs ports {PEER_PORTS}, in use: {busy}")
    argv = ["node", "node_modules/serverless/bin/serverless.js", "offline", "--noSponsor"]
    env = {**os.environ, **PEER_ENV}
    server = start_server(PEER_NAME, argv, PEERS_DIR, tmp / "serverless-offline.log", env)
    stack.callback(stop_server, server)
    for url in PEER_URLS.values():
        wait_ready(server, functools.partial(_invokes, url))
    return server
