"""The web console driven by a real browser (Debian's Chromium, headless, through Selenium):
sign-in and sign-out, the secret kept nowhere, invoke from the invoke panel, a live log line,
the invocations chart drawn from CloudWatch data, a limited key's view, errors shown.

Every test saves a screenshot of where it ended in the artifacts directory
(`$LAMINA_TEST_ARTIFACTS/console/`, else pytest's temporary directory: the path is printed
with `-rA`), and checks that the page asked nothing of any host but the server.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from tests import _browser
from tests.conftest import ADMIN_KEY, SIGNED_HTTP, Functions, Server

pytestmark = pytest.mark.skipif(_browser.missing() is not None, reason=str(_browser.missing()))

CODE = """
import json

def handler(event, context):
    print("console-marker " + json.dumps(event))
    return {"echo": event, "request": context.aws_request_id}
"""


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("console") / "data").start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def lam(console_server: Server) -> Any:
    return console_server.client()


@pytest.fixture
def deployed(lam: Any) -> Iterator[Functions]:
    functions = Functions(lam)
    yield functions
    functions.cleanup()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("LAMINA_TEST_ARTIFACTS")
    if root:
        path = Path(root) / "console"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    driver = _browser.chromium()
    yield driver
    driver.quit()


@pytest.fixture
def browser(
    chromium: WebDriver, console_server: Server, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[WebDriver]:
    """The module's browser, signed out, for one test; then its screenshot, and the check
    that every request it made went to the server."""
    chromium.get(console_server.endpoint + "/console")
    chromium.delete_all_cookies()
    _browser.requested_urls(chromium)
    yield chromium
    shot = artifacts / f"{request.node.name}.png"
    chromium.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    elsewhere = [
        url
        for url in _browser.requested_urls(chromium)
        if not url.startswith(console_server.endpoint + "/") and not url.startswith("data:")
    ]
    assert not elsewhere, elsewhere


def wait(driver: WebDriver, css: str, timeout: float = 20.0) -> WebElement:
    found: WebElement = WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )
    return found


def wait_text(driver: WebDriver, css: str, text: str, timeout: float = 20.0) -> WebElement:
    """The element at `css` once its text holds `text` (on a timeout, the page's text)."""
    try:
        WebDriverWait(driver, timeout).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
        )
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "main").text
        raise AssertionError(f"no {text!r} in {css} after {timeout} s; the page:\n{page}") from None
    return driver.find_element(By.CSS_SELECTOR, css)


def sign_in(driver: WebDriver, server: Server, key: tuple[str, str]) -> None:
    driver.get(server.endpoint + "/console#/functions")
    key_id = wait(driver, "#key-id")
    key_id.clear()  # a sign-in that failed leaves its key id in the form
    key_id.send_keys(key[0])
    driver.find_element(By.ID, "secret").send_keys(key[1])
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    wait(driver, "#sign-out")


def make_key(server: Server, resource: str) -> tuple[str, str]:
    """A new access key allowed every Lambda action on `resource` (and nothing else)."""
    made = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys", json={"UserName": "console"})
    assert made.status_code == 201, made.text
    key_id, secret = made.json()["AccessKeyId"], made.json()["SecretAccessKey"]
    grant = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": resource}],
    }
    put = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys/{key_id}/policies", json=grant)
    assert put.status_code == 200, put.text
    return key_id, secret


def test_sign_in_keeps_no_secret_and_sign_out_returns_to_sign_in(
    browser: WebDriver, console_server: Server
) -> None:
    key_id, secret = make_key(console_server, "*")
    browser.get(console_server.endpoint + "/console")
    wait(browser, "#key-id")
    # from the keyboard alone: the form starts focused, Tab moves on, Enter signs in
    typing = browser.switch_to.active_element
    assert typing.get_attribute("id") == "key-id"
    typing.send_keys(key_id, Keys.TAB, secret[:-1] + "x", Keys.ENTER)
    refused = wait(browser, "form.signin [role=alert]")
    assert "signature" in refused.text.lower(), refused.text
    assert browser.find_element(By.ID, "secret").get_attribute("value") == ""
    typing = browser.switch_to.active_element  # back on the secret, to try again
    assert typing.get_attribute("id") == "secret"
    typing.send_keys(secret, Keys.ENTER)
    wait(browser, "#sign-out")
    assert key_id in browser.find_element(By.ID, "who").text
    kept = browser.execute_script(
        "return [JSON.stringify({...localStorage}), JSON.stringify({...sessionStorage}),"
        " document.cookie, document.documentElement.outerHTML]"
    )
    for place in kept:
        assert secret not in place
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["lamina-console"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert secret not in cookies[0]["value"]

    browser.find_element(By.ID, "sign-out").click()
    wait(browser, "#key-id")
    browser.refresh()
    wait(browser, "#key-id")
    assert not browser.find_elements(By.ID, "sign-out")


def test_invoke_from_the_invoke_panel(
    browser: WebDriver, console_server: Server, deployed: Functions
) -> None:
    name = deployed.create(CODE)["FunctionName"]
    sign_in(browser, console_server, ADMIN_KEY)
    browser.get(f"{console_server.endpoint}/console#/functions/{name}/invoke")
    payload = wait(browser, "#payload")
    payload.clear()
    payload.send_keys('{"hello": ')
    button = browser.find_element(By.CSS_SELECTOR, "form.invoke button[type=submit]")
    assert not button.is_enabled()
    assert payload.get_attribute("aria-invalid") == "true"
    payload.send_keys('"console"}')
    assert button.is_enabled()
    button.click()
    result = wait_text(browser, "[data-testid=invoke-result]", "request")
    assert json.loads(result.text)["echo"] == {"hello": "console"}
    tail = browser.find_element(By.CSS_SELECTOR, "[data-testid=invoke-log]").text
    assert 'console-marker {"hello": "console"}' in tail
    assert "REPORT RequestId" in tail
    assert "Status\n200" in browser.find_element(By.ID, "invoke-out").text

    browser.find_element(By.CSS_SELECTOR, "nav.tabs a[href$='/queue']").click()
    lane = wait_text(browser, "section[aria-label='Asynchronous queue'] dl", "Queued")
    assert "Queued (waiting or running)\n0" in lane.text
    wait_text(browser, "section[aria-label='Durable executions']", "No durable executions.")


def test_live_logs_and_the_invocations_chart(
    browser: WebDriver, console_server: Server, deployed: Functions, lam: Any
) -> None:
    name = deployed.create(CODE)["FunctionName"]
    sign_in(browser, console_server, ADMIN_KEY)
    browser.get(f"{console_server.endpoint}/console#/functions/{name}/logs")
    wait(browser, "ol.log")
    marker = uuid.uuid4().hex
    for i in range(3):
        lam.invoke(FunctionName=name, Payload=json.dumps({"marker": marker, "i": i}))
    wait_text(browser, "ol.log", f'"marker": "{marker}", "i": 2')
    lines = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ol.log li")]
    order = [n for n, line in enumerate(lines) if marker in line]
    assert len(order) == 3 and order == sorted(order)  # newest at the bottom

    other = uuid.uuid4().hex
    browser.find_element(By.ID, "log-filter").send_keys(other, Keys.ENTER)
    lam.invoke(FunctionName=name, Payload=json.dumps({"marker": other, "i": 9}))
    wait_text(browser, "ol.log", f'"marker": "{other}", "i": 9')
    assert marker not in browser.find_element(By.CSS_SELECTOR, "ol.log").text
    pause = browser.find_element(By.XPATH, "//button[normalize-space()='Pause']")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    lam.invoke(FunctionName=name, Payload=json.dumps({"marker": other, "i": 10}))
    time.sleep(2.5)  # polls would have shown it by now
    assert '"i": 10' not in browser.find_element(By.CSS_SELECTOR, "ol.log").text
    pause.click()
    wait_text(browser, "ol.log", f'"marker": "{other}", "i": 10')

    browser.find_element(By.CSS_SELECTOR, "nav.tabs a[href$='/metrics']").click()
    # five invocations, in this minute or the one before: the drawn points sum to 5
    WebDriverWait(browser, 20).until(lambda d: sum(chart_points(d, "invocations")) == 5)
    chart = browser.find_element(By.CSS_SELECTOR, "figure[data-chart=invocations] svg")
    assert int(chart.get_attribute("data-points") or 0) == len(chart_points(browser, "invocations"))
    duration = browser.find_elements(By.CSS_SELECTOR, "figure[data-chart=duration] g.series")
    assert [g.get_attribute("data-label") for g in duration] == ["p50", "p90", "p99"]
    assert all(g.find_elements(By.TAG_NAME, "circle") for g in duration)
    wide = browser.find_element(By.XPATH, "//button[normalize-space()='24 h']")
    wide.click()
    WebDriverWait(browser, 20).until(
        lambda d: (
            wide.get_attribute("aria-pressed") == "true"
            and sum(chart_points(d, "invocations")) == 5
        )
    )


def chart_points(driver: WebDriver, chart: str) -> list[float]:
    """The values of the points drawn in a chart (each circle's title ends with its value)."""
    titles = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(t => t.textContent)",
        f"figure[data-chart={chart}] g.series circle title",
    )
    return [float(t.rsplit(": ", 1)[1]) for t in titles]


def test_a_limited_key_sees_only_its_functions(
    browser: WebDriver, console_server: Server, deployed: Functions
) -> None:
    tag = uuid.uuid4().hex[:8]
    mine = deployed.create(CODE, FunctionName=f"team-a-{tag}")["FunctionName"]
    theirs = deployed.create(CODE, FunctionName=f"team-b-{tag}")["FunctionName"]
    key = make_key(console_server, "arn:aws:lambda:*:*:function:team-a-*")
    sign_in(browser, console_server, key)
    listing = wait_text(browser, "main table", mine)
    assert theirs not in listing.text
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "main table a")]
    assert names and all(n.startswith("team-a-") for n in names), names
    browser.find_element(By.ID, "fn-filter").send_keys("team-b")
    wait_text(browser, "main", "No functions.")

    browser.get(f"{console_server.endpoint}/console#/functions/{theirs}")
    denied = wait(browser, "section[aria-label=Configuration] [role=alert]")
    assert "AccessDenied" in denied.text and theirs in denied.text, denied.text


def test_errors_are_shown_readably(browser: WebDriver, console_server: Server) -> None:
    sign_in(browser, console_server, ADMIN_KEY)
    browser.get(f"{console_server.endpoint}/console#/functions/no-such-function")
    alert = wait(browser, "section[aria-label=Configuration] [role=alert]")
    assert "ResourceNotFoundException" in alert.text and "no-such-function" in alert.text
    assert browser.find_element(By.TAG_NAME, "h1").text == "no-such-function"
    browser.get(f"{console_server.endpoint}/console#/functions/%E0%A4%A")
    assert "URIError" in wait(browser, "main [role=alert]").text


def test_function_page_shows_configuration_aliases_and_triggers(
    browser: WebDriver, console_server: Server, deployed: Functions, lam: Any
) -> None:
    name = deployed.create(CODE, Environment={"Variables": {"TABLE": "secret-value"}})[
        "FunctionName"
    ]
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    one = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    two = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion=one,
        RoutingConfig={"AdditionalVersionWeights": {two: 0.25}},
    )
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    lam.add_permission(
        FunctionName=name,
        StatementId="console-sid",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
    )
    events = console_server.client("events")
    rule = f"console-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, ScheduleExpression="rate(1 day)")
    events.put_targets(Rule=rule, Targets=[{"Id": "1", "Arn": arn}])
    route = {"routeKey": f"GET /{name}", "function": name, "payloadFormatVersion": "2.0"}
    added = SIGNED_HTTP.post(f"{console_server.endpoint}/lamina/routes", json=route)
    assert added.status_code == 201, added.text
    try:
        sign_in(browser, console_server, ADMIN_KEY)
        browser.get(f"{console_server.endpoint}/console#/functions/{name}")
        config = wait_text(browser, "section[aria-label=Configuration] dl", "256 MB")
        assert "python3.11" in config.text and "TABLE" in config.text
        assert "secret-value" not in browser.find_element(By.TAG_NAME, "main").text
        aliases = wait_text(browser, "section[aria-label=Aliases] table", "live")
        assert f"{one}: 75%, {two}: 25%" in aliases.text
        wait_text(browser, "section[aria-label=Versions] table", two)
        wait_text(browser, "section[aria-label='Function URLs'] table", url)
        wait_text(browser, "section[aria-label='HTTP routes'] table", f"GET /{name}")
        wait_text(browser, "section[aria-label='EventBridge rules'] ul", rule)
        policy = wait_text(browser, "section[aria-label='Resource policy'] table", "console-sid")
        assert "events.amazonaws.com" in policy.text
        wait_text(browser, "section[aria-label='Event-source mappings']", "No event-source")
    finally:
        events.remove_targets(Rule=rule, Ids=["1"])
        events.delete_rule(Name=rule)
        SIGNED_HTTP.delete(
            f"{console_server.endpoint}/lamina/routes", params={"routeKey": f"GET /{name}"}
        )


def test_alarms_view(browser: WebDriver, console_server: Server) -> None:
    cloudwatch = console_server.client("cloudwatch")
    alarm = f"console-{uuid.uuid4().hex[:8]}"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": "some-function"}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    try:
        sign_in(browser, console_server, ADMIN_KEY)
        browser.get(f"{console_server.endpoint}/console#/alarms")
        row = wait_text(browser, "main table", alarm)
        assert "AWS/Lambda/Errors (FunctionName=some-function)" in row.text
        assert "Sum ≥ 5" in row.text
    finally:
        cloudwatch.delete_alarms(AlarmNames=[alarm])


def test_with_authentication_off_there_is_no_sign_in(
    chromium: WebDriver, tmp_path: Path, artifacts: Path
) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--auth", "off")).start()
    try:
        chromium.delete_all_cookies()
        chromium.get(srv.endpoint + "/console")
        wait_text(chromium, "#who", "Authentication is off")
        wait_text(chromium, "main", "No functions.")
        assert not chromium.find_elements(By.ID, "key-id")
        chromium.save_screenshot(str(artifacts / "test_with_authentication_off.png"))
    finally:
        assert srv.stop() == 0, srv.log()


def test_a_deleted_key_s_session_returns_to_sign_in(
    browser: WebDriver, console_server: Server
) -> None:
    key_id, secret = make_key(console_server, "*")
    sign_in(browser, console_server, (key_id, secret))
    wait(browser, "main table, main p.muted")
    gone = SIGNED_HTTP.delete(f"{console_server.endpoint}/lamina/keys/{key_id}")
    assert gone.status_code == 204, gone.text
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='#/alarms']").click()
    wait(browser, "#key-id")
    assert not browser.find_elements(By.ID, "sign-out")


def test_the_queues_tab_shows_an_event_given_up(
    browser: WebDriver, console_server: Server, deployed: Functions, lam: Any
) -> None:
    name = deployed.create("def handler(event, context):\n    raise ValueError('no')\n")[
        "FunctionName"
    ]
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    request_id = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")[
        "ResponseMetadata"
    ]["RequestId"]
    sign_in(browser, console_server, ADMIN_KEY)
    url = f"{console_server.endpoint}/console#/functions/{name}/queue"

    def shown(driver: WebDriver) -> bool:
        driver.get(url)
        driver.refresh()  # the same address: load the page again
        section = wait(driver, "section[aria-label='Asynchronous queue'] dl")
        return request_id in section.find_element(By.XPATH, "..").text

    WebDriverWait(browser, 30, poll_frequency=0.5).until(shown)
    row = browser.find_element(By.XPATH, f"//tr[td/code[text()='{request_id}']]")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["$LATEST", "RetriesExhausted", "1"], cells
