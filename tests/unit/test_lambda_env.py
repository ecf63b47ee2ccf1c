"""The variables Lambda defines for a runtime (`scheduler.lambda_env`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lamina.cli.serve import _aws_endpoints
from lamina.models import FunctionConfig
from lamina.runtimes.catalog import Family, RuntimeInfo
from lamina.scheduler.lambda_env import lambda_environment
from lamina.settings import Settings

CONFIG = FunctionConfig(
    name="fn",
    version="$LATEST",
    runtime="python3.12",
    handler="app.handler",
    role="arn:aws:iam::000000000000:role/x",
    code_sha256="ab" * 32,
    code_size=1,
    revision_id="r",
    last_modified=datetime.now(UTC),
)
# A version manager's interpreter, far from any directory PATH names.
PYENV = RuntimeInfo(
    name="python3.12",
    executable="/root/.pyenv/versions/3.12.1/bin/python3.12",
    runtime_dir=Path("/src/lamina/runtimes/python"),
    family=Family.PYTHON,
    version="3.12",
)
SETTINGS = Settings(port=9999, data_dir=Path("/data"))


def env_of(settings: Settings = SETTINGS, lang: Path | None = Path("/var/lang")) -> dict[str, str]:
    return lambda_environment(
        CONFIG, settings, PYENV, Path("/var/task"), Path("/opt"), Path("/var/runtime"), lang
    )


def test_path_is_lambdas_and_names_no_host_interpreter_directory() -> None:
    env = env_of()
    assert env["PATH"] == "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
    assert ".pyenv" not in env["PATH"]
    assert env["LD_LIBRARY_PATH"].startswith("/var/lang/lib:/lib64:/usr/lib64:/var/runtime:")
    assert env["PYTHONPATH"] == (
        "/opt/python/lib/python3.12/site-packages:/opt/python:"
        "/var/lang/lib/python3.12/site-packages:/var/runtime"
    )


def test_a_custom_runtime_has_no_runtime_image() -> None:
    custom = RuntimeInfo("provided.al2023", "", Path("/x"), Family.PROVIDED)
    env = lambda_environment(
        CONFIG, SETTINGS, custom, Path("/var/task"), Path("/opt"), Path("/var/runtime"), None
    )
    assert env["PATH"] == "/usr/local/bin:/usr/bin/:/bin:/opt/bin"
    assert "AWS_EXECUTION_ENV" not in env


def test_lamina_services_have_their_own_endpoint_variables() -> None:
    env = env_of()
    for service in ("LAMBDA", "CLOUDWATCH_LOGS", "EVENTBRIDGE"):
        assert env[f"AWS_ENDPOINT_URL_{service}"] == "http://127.0.0.1:9999"
    # The catch-all brings any other service to Lamina's clear refusal, never to AWS.
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9999"
    assert not any(k.endswith("_DYNAMODB") for k in env)


def test_server_wide_endpoints_are_added_and_may_move_lamina_services() -> None:
    settings = Settings(
        port=9999,
        data_dir=Path("/data"),
        aws_endpoints=(("DYNAMODB", "http://127.0.0.1:8000"), ("LAMBDA", "http://other:1")),
    )
    env = env_of(settings)
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:8000"
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == "http://other:1"
    assert env["AWS_ENDPOINT_URL_EVENTBRIDGE"] == "http://127.0.0.1:9999"


def test_x_ray_variables_point_at_loopback() -> None:
    env = env_of()
    assert env["AWS_XRAY_DAEMON_ADDRESS"] == "127.0.0.1:2000"
    assert env["AWS_XRAY_CONTEXT_MISSING"] == "LOG_ERROR"
    assert "_X_AMZN_TRACE_ID" not in env  # per invocation, set by the runtime


def test_aws_endpoint_options_name_services_as_sdks_do() -> None:
    parsed = _aws_endpoints(
        (
            "dynamodb=http://127.0.0.1:8000/",
            "secretsmanager=https://secrets.internal",
            "SECRETS_MANAGER=https://other.internal",
            "cognito-idp=http://c:1",
        )
    )
    assert parsed == (
        ("COGNITO_IDENTITY_PROVIDER", "http://c:1"),
        ("DYNAMODB", "http://127.0.0.1:8000"),
        ("SECRETS_MANAGER", "https://other.internal"),
    )
