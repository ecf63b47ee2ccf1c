"""The web console's server side against a real server: signing in with a SigV4-signed
request as the browser does, the session cookie standing for a signature on every API (with
`X-Lamina-Console: 1`, never without), what ends a session, a limited key's view, the static
files, `--no-console`, and junk that must never make anything under /console fail."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tests.conftest import ADMIN_KEY, SIGNED_HTTP, Functions, Server, wait_for
from tests.integration.test_authorization import new_key
from tests.integration.test_function_urls import make_public

from lamina.api.http_front import SANDBOX_CSP
from lamina.auth.console_session import SessionTokens
from lamina.store.sealed import KEY_FILE, Sealer

pytestmark = pytest.mark.control_plane

ECHO = "def handler(event, context):\n    print('console-line', event)\n    return event\n"
FAIL = "def handler(event, context):\n    raise ValueError('no')\n"
CONSOLE = {"X-Lamina-Console": "1"}
#: a page with a CSP of its own
HTML_PAGE = """
def handler(event, context):
    return {"statusCode": 200, "body": "<p>hi</p>",
            "headers": {"content-type": "text/html", "content-security-policy": "img-src 'self'"}}
"""


def sign_in(server: Server, key_id: str, secret: str, region: str = "us-east-1") -> httpx.Response:
    """POST /console/session signed as the browser signs it: service lambda; host,
    x-amz-date and x-amz-content-sha256 signed; body `{}`."""
    url = server.endpoint + "/console/session"
    request = AWSRequest(
        method="POST",
        url=url,
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Amz-Content-SHA256": _sha(b"{}")},
    )
    SigV4Auth(Credentials(key_id, secret), "lambda", region).add_auth(request)
    return httpx.post(url, content=b"{}", headers=dict(request.headers.items()))


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def token_of(response: httpx.Response) -> str:
    token = response.cookies.get("lamina-console")
    assert token, response.headers
    return token


def console_get(server: Server, path: str, token: str, **kw: Any) -> httpx.Response:
    return httpx.get(
        server.endpoint + path, headers={**CONSOLE, "Cookie": f"lamina-console={token}"}, **kw
    )


def console_post(
    server: Server, path: str, token: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return httpx.post(
        server.endpoint + path,
        content=body,
        headers={**CONSOLE, "Cookie": f"lamina-console={token}", **headers},
    )


def expect_refused(response: httpx.Response, error_type: str | None = None) -> None:
    assert response.status_code == 403, response.text
    if error_type is not None:
        assert response.headers["x-amzn-ErrorType"] == error_type


def test_sign_in_sets_a_strict_http_only_cookie_that_stands_for_the_key(server: Server) -> None:
    signed = sign_in(server, *ADMIN_KEY)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["AccessKeyId"] == ADMIN_KEY[0]
    assert body["Arn"] == "arn:aws:iam::000000000000:user/admin"
    assert 3590 <= body["Expires"] - time.time() <= 3600
    cookie = signed.headers["set-cookie"]
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0].startswith("lamina-console=")
    assert {"Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=3600"} <= set(parts)
    assert "Secure" not in parts  # plain http on loopback
    token = token_of(signed)

    who = httpx.get(server.endpoint + "/console/session", cookies={"lamina-console": token})
    assert who.status_code == 200 and who.json() == body

    # Signing out clears the cookie.
    out = httpx.delete(server.endpoint + "/console/session")
    assert out.status_code == 204
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert out.headers["set-cookie"].startswith("lamina-console=;")
    # No cookie: no session, said as AWS says it.
    none = httpx.get(server.endpoint + "/console/session")
    expect_refused(none, "MissingAuthenticationTokenException")
    assert none.json()["__type"] == "MissingAuthenticationTokenException"


def test_the_cookie_with_the_header_authenticates_every_api(
    server: Server, functions: Functions
) -> None:
    token = token_of(sign_in(server, *ADMIN_KEY))
    name = functions.create(ECHO)["FunctionName"]
    listed = console_get(server, "/2015-03-31/functions/", token)
    assert listed.status_code == 200, listed.text
    assert name in [f["FunctionName"] for f in listed.json()["Functions"]]

    invoked = console_post(
        server,
        f"/2015-03-31/functions/{name}/invocations",
        token,
        b'{"hello": 1}',
        {"X-Amz-Log-Type": "Tail"},
    )
    assert invoked.status_code == 200, invoked.text
    assert invoked.json() == {"hello": 1}
    assert "console-line" in base64.b64decode(invoked.headers["x-amz-log-result"]).decode()

    def logged() -> bool:
        found = console_post(
            server,
            "/",
            token,
            json.dumps({"logGroupName": f"/aws/lambda/{name}"}).encode(),
            {
                "X-Amz-Target": "Logs_20140328.FilterLogEvents",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        assert found.status_code == 200, found.text
        return any("console-line" in e["message"] for e in found.json()["events"])

    wait_for(logged, message="the invocation's log line")

    now = int(time.time())
    metrics = console_post(
        server,
        "/",
        token,
        json.dumps(
            {
                "StartTime": now - 3600,
                "EndTime": now + 60,
                "MetricDataQueries": [
                    {
                        "Id": "calls",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/Lambda",
                                "MetricName": "Invocations",
                                "Dimensions": [{"Name": "FunctionName", "Value": name}],
                            },
                            "Period": 60,
                            "Stat": "Sum",
                        },
                    }
                ],
            }
        ).encode(),
        {
            "X-Amz-Target": "GraniteServiceVersion20100801.GetMetricData",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    assert metrics.status_code == 200, metrics.text
    assert sum(metrics.json()["MetricDataResults"][0]["Values"]) == 1

    # The console's own list: the function, with its last hour's activity.
    mine = console_get(server, "/console/api/functions", token)
    assert mine.status_code == 200, mine.text
    entry = next(f for f in mine.json()["Functions"] if f["FunctionName"] == name)
    assert entry["Runtime"] == "python3.11" and entry["FunctionArn"].endswith(":" + name)
    assert entry["Lamina"]["Invocations1h"] == 1 and entry["Lamina"]["Errors1h"] == 0
    assert abs(entry["Lamina"]["LastInvoked"] / 1000 - time.time()) < 120


def test_the_cookie_alone_or_the_header_alone_is_unsigned(server: Server) -> None:
    token = token_of(sign_in(server, *ADMIN_KEY))
    path = server.endpoint + "/2015-03-31/functions/"
    cookie_only = httpx.get(path, headers={"Cookie": f"lamina-console={token}"})
    expect_refused(cookie_only, "MissingAuthenticationTokenException")
    header_only = httpx.get(path, headers=CONSOLE)
    expect_refused(header_only, "MissingAuthenticationTokenException")
    wrong_header = httpx.get(
        path, headers={"X-Lamina-Console": "yes", "Cookie": f"lamina-console={token}"}
    )
    expect_refused(wrong_header, "MissingAuthenticationTokenException")
    # The JSON APIs refuse it in their own shape.
    logs = httpx.post(
        server.endpoint + "/",
        content=b"{}",
        headers={
            "Cookie": f"lamina-console={token}",
            "X-Amz-Target": "Logs_20140328.DescribeLogGroups",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert logs.status_code == 403
    assert logs.json()["__type"] == "MissingAuthenticationTokenException"
    # A session cannot sign in again (extending itself): signing in takes a signature.
    again = console_post(server, "/console/session", token, b"{}", {})
    expect_refused(again, "MissingAuthenticationTokenException")


def test_tampered_foreign_and_expired_tokens_are_refused(server: Server) -> None:
    token = token_of(sign_in(server, *ADMIN_KEY))
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    sealer = Sealer((server.data_dir / KEY_FILE).read_bytes())
    # Sealed with the server's own key, but for another purpose: not a session.
    other = sealer.seal(json.dumps({"k": ADMIN_KEY[0], "e": 2**40}).encode(), b"test")
    foreign = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    # A session of a key whose time is up, minted with the server's key.
    expired, _ = SessionTokens(sealer).mint(ADMIN_KEY[0], expires=int(time.time()) - 1)
    for bad in (tampered, foreign, expired):
        expect_refused(console_get(server, "/2015-03-31/functions/", bad))
        who = httpx.get(server.endpoint + "/console/session", cookies={"lamina-console": bad})
        expect_refused(who)
    expired_call = console_get(server, "/2015-03-31/functions/", expired)
    assert expired_call.headers["x-amzn-ErrorType"] == "ExpiredTokenException"
    # A live one minted the same way works: the test's token maker is the server's.
    live, _ = SessionTokens(sealer).mint(ADMIN_KEY[0])
    assert console_get(server, "/2015-03-31/functions/", live).status_code == 200


def test_a_wrong_secret_or_unknown_key_cannot_sign_in(server: Server) -> None:
    wrong = sign_in(server, ADMIN_KEY[0], "not-the-secret")
    expect_refused(wrong, "InvalidSignatureException")
    assert "set-cookie" not in wrong.headers
    unknown = sign_in(server, "AKIAUNKNOWNUNKNOWN00", "x")
    expect_refused(unknown, "UnrecognizedClientException")
    unsigned = httpx.post(server.endpoint + "/console/session", json={})
    expect_refused(unsigned, "MissingAuthenticationTokenException")
    other_region = sign_in(server, *ADMIN_KEY, region="eu-west-1")
    expect_refused(other_region, "InvalidSignatureException")


def test_a_deleted_keys_session_ends_at_once(server: Server, tmp_path: Path) -> None:
    key = new_key(server, tmp_path, {"Effect": "Allow", "Action": "lambda:*", "Resource": "*"})
    token = token_of(sign_in(server, key["AccessKeyId"], key["SecretAccessKey"]))
    assert console_get(server, "/2015-03-31/functions/", token).status_code == 200
    deleted = SIGNED_HTTP.delete(f"{server.endpoint}/lamina/keys/{key['AccessKeyId']}")
    assert deleted.status_code in (200, 204), deleted.text
    expect_refused(
        console_get(server, "/2015-03-31/functions/", token), "UnrecognizedClientException"
    )
    who = httpx.get(server.endpoint + "/console/session", cookies={"lamina-console": token})
    expect_refused(who, "UnrecognizedClientException")


def test_a_limited_key_sees_only_its_functions(
    server: Server, functions: Functions, tmp_path: Path
) -> None:
    team = f"team-a{uuid.uuid4().hex[:6]}-"
    mine = functions.create(ECHO, FunctionName=team + "one")["FunctionName"]
    failing = functions.create(FAIL, FunctionName=team + "two")["FunctionName"]
    theirs = functions.create(ECHO)["FunctionName"]
    key = new_key(server, tmp_path)  # no policy yet: it may sign in, and see nothing
    signed = sign_in(server, key["AccessKeyId"], key["SecretAccessKey"])
    assert signed.json()["Arn"] == f"arn:aws:iam::000000000000:user/{key['User']}"
    # The token is sealed: neither the secret nor even the key id shows in it.
    for secret in (key["SecretAccessKey"], key["AccessKeyId"]):
        assert secret not in signed.headers["set-cookie"]
    assert key["SecretAccessKey"] not in signed.text
    token = token_of(signed)
    nothing = console_get(server, "/console/api/functions", token)
    assert nothing.status_code == 200 and nothing.json() == {"Functions": []}
    # A policy attached after signing in applies to the very next request.
    attached = SIGNED_HTTP.post(
        f"{server.endpoint}/lamina/keys/{key['AccessKeyId']}/policies",
        json={
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "lambda:*",
                    "Resource": f"arn:aws:lambda:*:*:function:{team}*",
                }
            ],
        },
    )
    assert attached.status_code == 200, attached.text
    failed = console_post(server, f"/2015-03-31/functions/{failing}/invocations", token, b"{}", {})
    assert failed.status_code == 200 and failed.headers["x-amz-function-error"] == "Unhandled"

    listed = console_get(server, "/console/api/functions", token)
    assert listed.status_code == 200, listed.text
    names = {f["FunctionName"]: f["Lamina"] for f in listed.json()["Functions"]}
    assert set(names) == {mine, failing}
    assert names[failing]["Invocations1h"] == 1 and names[failing]["Errors1h"] == 1
    assert names[mine] == {"Invocations1h": 0, "Errors1h": 0, "LastInvoked": None}
    # The key may not ListFunctions (its resource is `*`), nor read another's function.
    expect_refused(console_get(server, "/2015-03-31/functions/", token), "AccessDeniedException")
    expect_refused(
        console_get(server, f"/2015-03-31/functions/{theirs}", token), "AccessDeniedException"
    )
    assert console_get(server, f"/2015-03-31/functions/{mine}", token).status_code == 200
    # The admin sees them all.
    admin = token_of(sign_in(server, *ADMIN_KEY))
    every = {
        f["FunctionName"]
        for f in console_get(server, "/console/api/functions", admin).json()["Functions"]
    }
    assert {mine, failing, theirs} <= every


def test_function_urls_never_see_the_session(
    server: Server, functions: Functions, lam: Any
) -> None:
    """Function URLs share the console's origin: the browser sends them the cookie, and the
    server keeps it from the function."""
    name = functions.create("def handler(event, context):\n    return event\n")["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    token = token_of(sign_in(server, *ADMIN_KEY))
    both = httpx.get(url, headers={"Cookie": f"a=1; lamina-console={token}; b=2"})
    assert both.status_code == 200, both.text
    assert both.json()["cookies"] == ["a=1", "b=2"]
    assert token not in both.text
    alone = httpx.get(url, headers={"Cookie": f"lamina-console={token}"})
    assert alone.status_code == 200 and token not in alone.text
    assert "cookies" not in alone.json()


def test_pages_functions_serve_on_the_consoles_origin_are_sandboxed(
    server: Server, functions: Functions, lam: Any
) -> None:
    """What a function answers on the path forms (its URL's `/lambda-url/...`, an HTTP
    route's `/_http/...`) shares the console's origin: it carries a CSP sandbox, so a page
    there cannot use a console session; the Host form is an origin of its own and is left
    as the function made it."""
    name = functions.create(HTML_PAGE)["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    on_path = httpx.get(url)
    assert on_path.status_code == 200, on_path.text
    assert on_path.headers.get_list("content-security-policy") == ["img-src 'self'", SANDBOX_CSP]
    url_id = url.split("/lambda-url/", 1)[1].strip("/")
    on_host = httpx.get(
        server.endpoint + "/", headers={"Host": f"{url_id}.lambda-url.us-east-1.localhost"}
    )
    assert on_host.status_code == 200, on_host.text
    assert on_host.headers.get_list("content-security-policy") == ["img-src 'self'"]
    added = SIGNED_HTTP.post(
        server.endpoint + "/lamina/routes", json={"routeKey": f"GET /{name}", "function": name}
    )
    assert added.status_code == 201, added.text
    routed = httpx.get(f"{server.endpoint}/_http/{name}")
    assert routed.status_code == 200, routed.text
    assert SANDBOX_CSP in routed.headers.get_list("content-security-policy")


def test_static_files(server: Server) -> None:
    for path in ("/console", "/console/", "/console/static/index.html"):
        page = httpx.get(server.endpoint + path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "<html" in page.text
    for path in (
        "/console/static/%2e%2e/api/console.py",
        "/console/static/..%2Fapi%2Fconsole.py",
        "/console/static/%2Fetc%2Fpasswd",
        "/console/static//etc/passwd",
        "/console/static/.hidden",
        "/console/static/",
        "/console/static/missing.js",
        "/console/nothing-here",
    ):
        refused = httpx.get(server.endpoint + path)
        assert refused.status_code == 404, (path, refused.status_code, refused.text)


def test_junk_never_fails(server: Server) -> None:
    junk_cookies = [
        b"lamina-console=%%%%not-base64%%%%",
        b"lamina-console=",
        b"lamina-console",
        "lamina-console=\u00e9\u00e9".encode(),
        b";;;=;lamina-console=abc=def;",
        b"lamina-console=" + base64.urlsafe_b64encode(b"\x01" + b"\x00" * 40),
    ]
    paths = ["/console/session", "/console/api/functions", "/2015-03-31/functions/"]
    for cookie in junk_cookies:
        for path in paths:
            got = httpx.get(server.endpoint + path, headers={**CONSOLE, "Cookie": cookie})
            assert got.status_code == 403, (cookie, path, got.text)
    # A cookie past what any token is, and one past what the server reads at all.
    for size in (5_000, 60_000):
        huge = httpx.get(
            server.endpoint + "/console/api/functions",
            headers={**CONSOLE, "Cookie": "lamina-console=" + "A" * size},
        )
        assert huge.status_code in (400, 403, 431), (size, huge.status_code)
    for body in (b"{not json", b"\xff\xfe", b"[]", b"A" * 100_000):
        for method in ("POST", "GET", "DELETE"):
            got = httpx.request(
                method,
                server.endpoint + "/console/session",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert got.status_code < 500, (method, body[:20], got.text)
        posted = httpx.post(server.endpoint + "/console/api/functions", content=body)
        assert posted.status_code < 500
    odd = httpx.request("PATCH", server.endpoint + "/console")
    assert 400 <= odd.status_code < 500


def test_no_console(own_server: Any, tmp_path: Path) -> None:
    srv: Server = own_server(tmp_path / "data", "--no-console")
    sealer = Sealer((srv.data_dir / KEY_FILE).read_bytes())
    live, _ = SessionTokens(sealer).mint(ADMIN_KEY[0])
    for method, path in (
        ("GET", "/console"),
        ("GET", "/console/"),
        ("GET", "/console/static/index.html"),
        ("GET", "/console/session"),
        ("DELETE", "/console/session"),
        ("GET", "/console/api/functions"),
    ):
        got = httpx.request(method, srv.endpoint + path, headers=CONSOLE)
        assert got.status_code == 404, (method, path, got.text)
    assert sign_in(srv, *ADMIN_KEY).status_code == 404
    # No session to guard: a function's pages on the path form are as it made them.
    name = Functions(srv.client()).create(HTML_PAGE)["FunctionName"]
    lam = srv.client()
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    page = httpx.get(url)
    assert page.headers.get_list("content-security-policy") == ["img-src 'self'"], page.text
    # A token the server's key would have minted authenticates nothing.
    expect_refused(
        console_get(srv, "/2015-03-31/functions/", live), "MissingAuthenticationTokenException"
    )


def test_session_ttl_option(own_server: Any, tmp_path: Path) -> None:
    srv: Server = own_server(tmp_path / "data", "--console-session-ttl", "900")
    signed = sign_in(srv, *ADMIN_KEY)
    assert "Max-Age=900" in signed.headers["set-cookie"]
    assert 890 <= signed.json()["Expires"] - time.time() <= 900


@pytest.mark.parametrize("ttl", ["899", "43201", "soon"])
def test_session_ttl_bounds(ttl: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--console-session-ttl",
            ttl,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--console-session-ttl" in run.stderr


def test_with_authentication_off_there_is_nothing_to_sign_in_with(
    own_server: Any, tmp_path: Path
) -> None:
    srv: Server = own_server(tmp_path / "data", "--auth", "off")
    nobody = {"AccessKeyId": None, "Arn": None, "Expires": None}
    for method in ("POST", "GET"):
        got = httpx.request(method, srv.endpoint + "/console/session", json={})
        assert got.status_code == 200 and got.json() == nobody
        assert "set-cookie" not in got.headers
    listed = httpx.get(srv.endpoint + "/console/api/functions")
    assert listed.status_code == 200 and listed.json() == {"Functions": []}
