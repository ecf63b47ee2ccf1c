"""What each listener serves (`lamina.api.listeners`): a function reaches Lamina's APIs that
its role allows through its sandbox's AWS_ENDPOINT_URL, but not `/metrics` and `/health`
(which answer without a signature and name every function); `--metrics-listen` moves
`/metrics` to an address of its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
from tests.conftest import SIGNED_HTTP, Functions, Server, free_port, lamina
from tests.integration.test_authorization import ACCOUNT, CALLER, ECHO, arn
from tests.integration.test_function_urls import make_public, url_id

#: the signing caller of the authorization tests, plus unsigned GETs of Lamina's own
#: operator endpoints through the same AWS_ENDPOINT_URL
PROBE = (
    CALLER
    + r"""
def get(path):
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return {"status": resp.status, "body": resp.read().decode()[:2000]}
    except urllib.error.HTTPError as e:
        return {
            "status": e.code,
            "error": e.headers.get("x-amzn-ErrorType"),
            "body": e.read().decode()[:2000],
        }

def handler(event, context):
    return {
        "metrics": get("/metrics"),
        "health": get("/health"),
        "invoke": invoke(event["target"]),
    }
"""
)


def test_a_function_cannot_read_metrics_or_health_but_calls_what_its_role_allows(
    own_server: Callable[..., Server],
) -> None:
    server = own_server(None, "--sandbox", "namespace")
    lam = server.client()
    functions = Functions(lam)
    try:
        target = functions.create(ECHO)["FunctionName"]
        role = f"prober-{uuid.uuid4().hex[:8]}"
        statement = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn(target)}
        put = SIGNED_HTTP.put(
            f"{server.endpoint}/lamina/roles/{role}",
            json={"Policies": [{"Version": "2012-10-17", "Statement": [statement]}]},
        )
        assert put.status_code in (200, 201), put.text
        prober = functions.create(PROBE, Timeout=30)["FunctionName"]
        lam.update_function_configuration(
            FunctionName=prober, Role=f"arn:aws:iam::{ACCOUNT}:role/{role}"
        )
        lam.get_waiter("function_updated_v2").wait(FunctionName=prober)

        resp = lam.invoke(FunctionName=prober, Payload=json.dumps({"target": target}))
        out = json.loads(resp["Payload"].read())
        assert "FunctionError" not in resp, out
        for path in ("metrics", "health"):
            assert out[path]["status"] == 403, out[path]
            assert out[path]["error"] == "AccessDeniedException", out[path]
            body = json.loads(out[path]["body"])
            assert "execution environment" in body["Message"]
            assert target not in out[path]["body"]
        # What its role allows still works through the same endpoint.
        assert out["invoke"]["status"] == 200, out["invoke"]
        assert json.loads(out["invoke"]["body"]) == {"ran": target}
        # From the host, both are served as before.
        assert httpx.get(server.endpoint + "/health").status_code == 200
        metrics = httpx.get(server.endpoint + "/metrics")
        assert metrics.status_code == 200
        assert f'function="{target}"' in metrics.text
    finally:
        functions.cleanup()


def test_metrics_listen_serves_metrics_there_and_not_on_the_main_address(
    own_server: Callable[..., Server],
) -> None:
    port = free_port()
    server = own_server(None, "--metrics-listen", f"127.0.0.1:{port}")
    lam = server.client()
    name = f"t-{uuid.uuid4().hex[:12]}"
    own = Functions(lam)
    try:
        own.create(ECHO, FunctionName=name)
        lam.invoke(FunctionName=name)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.status_code == 200
        assert f'function="{name}"' in metrics.text
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"

        main = httpx.get(server.endpoint + "/metrics")
        assert main.status_code == 404
        assert main.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert name not in main.text
        # The main address keeps /health (load balancers), and the metrics address serves
        # nothing else, signed or not.
        assert httpx.get(server.endpoint + "/health").status_code == 200
        other = SIGNED_HTTP.get(f"http://127.0.0.1:{port}/2015-03-31/functions/")
        assert other.status_code == 404
        assert name not in other.text
        # A function URL's own /metrics path is the function's, not Lamina's metrics.
        url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
        make_public(lam, name)
        host = f"{url_id(url)}.lambda-url.us-east-1.on.aws"
        own_path = httpx.get(server.endpoint + "/metrics", headers={"Host": host})
        assert own_path.status_code == 200, own_path.text
        assert own_path.json() == {"ran": name}
    finally:
        own.cleanup()


def test_metrics_listen_is_checked() -> None:
    for bad in ("nowhere", "127.0.0.1:", "127.0.0.1:99999", ":9000", "127.0.0.1:8484"):
        done = lamina("serve", "--metrics-listen", bad, endpoint="http://127.0.0.1:1")
        assert done.returncode == 2, (bad, done.stderr)
        assert "--metrics-listen" in done.stderr
