"""The environment variables Lambda defines for a function's runtime."""

from __future__ import annotations

from pathlib import Path

from lamina.models import FunctionConfig
from lamina.runtimes.catalog import Family, RuntimeInfo
from lamina.settings import Settings

#: where a sandbox that mounts Lambda's layout shows the code, the runtime and the layers
LAMBDA_TASK_ROOT = Path("/var/task")
LAMBDA_RUNTIME_DIR = Path("/var/runtime")
LAMBDA_OPT = Path("/opt")

# Placeholders: each environment replaces them with its role session's when it starts (see
# `EnvironmentContext.credentials`); with authentication off they stay, unchecked, and keep
# the AWS SDK from probing an instance-metadata address.
_DUMMY_KEY_ID = "LAMINAFUNCTIONKEY000"
_DUMMY_SECRET = "lamina-function-secret-not-checked"
_DUMMY_TOKEN = "lamina-function-session-token"


def lambda_environment(
    config: FunctionConfig,
    settings: Settings,
    runtime: RuntimeInfo,
    task_root: Path,
    opt_dir: Path,
    runtime_dir: Path | None = None,
) -> dict[str, str]:
    """Every variable Lambda sets, except the per-environment AWS_LAMBDA_RUNTIME_API and
    AWS_LAMBDA_LOG_STREAM_NAME, which the environment adds.

    Paths are as the runtime sees them: `task_root` the code, `opt_dir` where the function's
    layers are merged (Lambda's /opt), `runtime_dir` the runtime's own files (by default
    where the runtime has them on the host).
    """
    runtime_root = str(runtime_dir or runtime.runtime_dir)
    opt = str(opt_dir)
    path = ["/usr/local/bin", "/usr/bin", "/bin", f"{opt}/bin"]
    if runtime.executable:
        interpreter_dir = str(Path(runtime.executable).parent)
        if interpreter_dir not in path:
            path.append(interpreter_dir)
    env = {
        "_HANDLER": config.handler,
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": config.log_group,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": _DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": _DUMMY_SECRET,
        "AWS_SESSION_TOKEN": _DUMMY_TOKEN,
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": runtime_root,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": ":".join(path),
        "LD_LIBRARY_PATH": f"/lib64:/usr/lib64:{runtime_root}:{runtime_root}/lib:"
        f"{task_root}:{task_root}/lib:{opt}/lib",
    }
    if config.logging.json:
        # What Lambda's runtimes read to log JSON records and drop those under the level.
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        env["AWS_LAMBDA_LOG_LEVEL"] = config.logging.application_log_level or "INFO"
    if runtime.family is not Family.PROVIDED:
        # Lambda sets no execution environment name for custom runtimes.
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{config.runtime}"
    if runtime.family is Family.PYTHON:
        # Layers' Python paths, in Lambda's order; the bootstrap puts the code first.
        env["PYTHONPATH"] = (
            f"{opt}/python/lib/python{runtime.version}/site-packages:{opt}/python:{runtime_root}"
        )
    elif runtime.family is Family.JAVA and opt != str(LAMBDA_OPT):
        # Lamina's Java client looks for layers' jars under /opt/java/lib; where a backend
        # shows layers elsewhere (the process backend), it is told where (not a Lambda name).
        env["_LAMINA_OPT"] = opt
    elif runtime.family is Family.NODE:
        major = runtime.version.split(".")[0]
        env["NODE_PATH"] = (
            f"{opt}/nodejs/node{major}/node_modules:{opt}/nodejs/node_modules:"
            f"{runtime_root}/node_modules:{runtime_root}:{task_root}"
        )
    return env
