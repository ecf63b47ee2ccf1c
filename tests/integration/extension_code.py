"""The code of the test extensions: one in Python, one in Node, each a complete external
extension as a layer ships it (`extensions/<name>`, executable, and its code beside it).

Each registers for INVOKE and SHUTDOWN, subscribes a listener to the Telemetry API, and
reports what it sees as lines of its own output (which land in the function's log stream):

    EXT <name> REGISTERED <functionName> <handler>
    EXT <name> LISTEN <host>                     (where its telemetry listener listens)
    EXT <name> ERR <status> <errorType>          (a deliberately bad call)
    EXT <name> INVOKE <requestId> <invokedFunctionArn>
    EXT <name> DONE <requestId>                  (after its post-processing)
    EXT <name> TYPE <telemetry event type>       (the first of each type it receives)
    EXT <name> FUNCTION-LINE <record>            (a function line carrying MARK)
    EXT <name> platform.runtimeDone|platform.report <requestId> <status> <durationMs>
    EXT <name> SHUTDOWN <shutdownReason> <ms to the deadline>
"""

from __future__ import annotations

PY_EXTENSION = r"""#!/usr/bin/env python3
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

NAME = os.path.basename(sys.argv[0])
API = os.environ["AWS_LAMBDA_RUNTIME_API"]
POST_PROCESS_S = float(os.environ.get("EXT_POST_PROCESS_S", "0"))
seen_types = set()
lock = threading.Lock()


def say(*words):
    print("EXT", NAME, *words, flush=True)


def call(method, path, body=None, headers=None):
    req = urllib.request.Request(
        f"http://{API}{path}", data=body, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for event in batch:
            with lock:
                new = event["type"] not in seen_types
                seen_types.add(event["type"])
            if new:
                say("TYPE", event["type"])
            record = event.get("record")
            if event["type"] in ("platform.runtimeDone", "platform.report"):
                say(event["type"], record["requestId"], record["status"],
                    record["metrics"]["durationMs"])
            if event["type"] == "function" and "MARK" in str(record):
                say("FUNCTION-LINE", str(record).strip())
        # Answered once handled: Lamina sends SHUTDOWN after its last batch is taken.
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def listen():
    # sandbox.localdomain, as on Lambda; a backend without it resolves nothing (process).
    try:
        host = socket.gethostbyname("sandbox.localdomain") and "sandbox.localdomain"
    except OSError:
        host = "127.0.0.1"
    server = HTTPServer((host, 0), Listener)
    say("LISTEN", host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


status, headers, body = call(
    "POST",
    "/2020-01-01/extension/register",
    json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
    {"Lambda-Extension-Name": NAME, "Lambda-Extension-Accept-Feature": "accountId"},
)
ident = {k.lower(): v for k, v in headers.items()}["lambda-extension-identifier"]
say("REGISTERED", body["functionName"], body["handler"], body.get("accountId"))
for bad in ("not-an-id", "00000000-0000-4000-8000-000000000000"):
    status, _, body = call("GET", "/2020-01-01/extension/event/next", None,
                           {"Lambda-Extension-Identifier": bad})
    say("ERR", status, body["errorType"])
port = listen()
status, _, body = call(
    "PUT",
    "/2022-07-01/telemetry",
    json.dumps({
        "schemaVersion": "2022-12-13",
        "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/t"},
        "types": ["platform", "function", "extension"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
    }).encode(),
    {"Lambda-Extension-Identifier": ident},
)
say("SUBSCRIBED", status)
while True:
    status, _, event = call("GET", "/2020-01-01/extension/event/next", None,
                            {"Lambda-Extension-Identifier": ident})
    if event["eventType"] == "INVOKE":
        say("INVOKE", event["requestId"], event["invokedFunctionArn"])
        time.sleep(POST_PROCESS_S)
        say("DONE", event["requestId"])
    else:
        left = event["deadlineMs"] - int(time.time() * 1000)
        say("SHUTDOWN", event["shutdownReason"], left)
        sys.exit(0)
"""

NODE_EXTENSION = r"""#!/usr/bin/env node
const http = require('http');
const path = require('path');
const dns = require('dns');

const NAME = path.basename(process.argv[1]);
const [HOST, PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const POST_PROCESS_MS = Number(process.env.EXT_POST_PROCESS_S || '0') * 1000;
const seenTypes = new Set();
const say = (...words) => console.log(['EXT', NAME, ...words].join(' '));

function call(method, p, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, path: p, method, headers: headers || {} },
      (res) => {
        let data = '';
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                                      body: data ? JSON.parse(data) : null }));
      });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function listen() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c));
      req.on('end', () => {
        for (const event of JSON.parse(data)) {
          if (!seenTypes.has(event.type)) {
            seenTypes.add(event.type);
            say('TYPE', event.type);
          }
          if (event.type === 'platform.runtimeDone' || event.type === 'platform.report') {
            const r = event.record;
            say(event.type, r.requestId, r.status, r.metrics.durationMs);
          }
          if (event.type === 'function' && String(event.record).includes('MARK')) {
            say('FUNCTION-LINE', String(event.record).trim());
          }
        }
        res.writeHead(200);
        res.end();
      });
    });
    dns.lookup('sandbox.localdomain', (err) => {
      // sandbox.localdomain, as on Lambda; a backend without it resolves nothing (process).
      server.listen(0, err ? '127.0.0.1' : 'sandbox.localdomain', () =>
        resolve(server.address().port));
    });
  });
}

(async () => {
  const reg = await call('POST', '/2020-01-01/extension/register',
    JSON.stringify({ events: ['INVOKE', 'SHUTDOWN'] }),
    { 'Lambda-Extension-Name': NAME, 'Lambda-Extension-Accept-Feature': 'accountId' });
  const id = reg.headers['lambda-extension-identifier'];
  say('REGISTERED', reg.body.functionName, reg.body.handler, reg.body.accountId);
  const bad = await call('GET', '/2020-01-01/extension/event/next', null, {});
  say('ERR', bad.status, bad.body.errorType);
  const port = await listen();
  const sub = await call('PUT', '/2022-07-01/telemetry', JSON.stringify({
    schemaVersion: '2022-12-13',
    destination: { protocol: 'HTTP', URI: `http://sandbox.localdomain:${port}/t` },
    types: ['platform', 'function', 'extension'],
    buffering: { maxItems: 1000, maxBytes: 262144, timeoutMs: 25 },
  }), { 'Lambda-Extension-Identifier': id });
  say('SUBSCRIBED', sub.status);
  for (;;) {
    const next = await call('GET', '/2020-01-01/extension/event/next', null,
      { 'Lambda-Extension-Identifier': id });
    const event = next.body;
    if (event.eventType === 'INVOKE') {
      say('INVOKE', event.requestId, event.invokedFunctionArn);
      await new Promise((r) => setTimeout(r, POST_PROCESS_MS));
      say('DONE', event.requestId);
    } else {
      say('SHUTDOWN', event.shutdownReason, event.deadlineMs - Date.now());
      process.exit(0);
    }
  }
})();
"""
