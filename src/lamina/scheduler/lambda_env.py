"""The environment variables Lambda defines for a function's runtime."""

from __future__ import annotations

from pathlib import Path

from lamina.models import FunctionConfig
from lamina.runtimes.catalog import RuntimeInfo
from lamina.settings import Settings

# Functions call Lamina's own endpoint with these; they are not secrets (the API has no
# authentication yet) but keep the AWS SDK from probing an instance-metadata address.
_DUMMY_KEY_ID = "LAMINAFUNCTIONKEY000"
_DUMMY_SECRET = "lamina-function-secret-not-checked"
_DUMMY_TOKEN = "lamina-function-session-token"


def lambda_environment(
    config: FunctionConfig, settings: Settings, runtime: RuntimeInfo, task_root: Path
) -> dict[str, str]:
    """Every variable Lambda sets, except the per-environment AWS_LAMBDA_RUNTIME_API and
    AWS_LAMBDA_LOG_STREAM_NAME, which the environment adds."""
    interpreter_dir = str(Path(runtime.executable).parent)
    return {
        "_HANDLER": config.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": _DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": _DUMMY_SECRET,
        "AWS_SESSION_TOKEN": _DUMMY_TOKEN,
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": str(runtime.runtime_dir),
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": f"/usr/local/bin:/usr/bin:/bin:/opt/bin:{interpreter_dir}",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/opt/lib",
        "PYTHONPATH": str(runtime.runtime_dir),
    }
