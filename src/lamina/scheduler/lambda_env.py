"""The environment variables Lambda defines for a function's runtime."""

from __future__ import annotations

from pathlib import Path

from lamina.aws_services import SERVED
from lamina.models import FunctionConfig, FunctionImage
from lamina.runtimes.catalog import Family, RuntimeInfo
from lamina.settings import Settings

#: where a sandbox that mounts Lambda's layout shows the code, the runtime and the layers
LAMBDA_TASK_ROOT = Path("/var/task")
LAMBDA_RUNTIME_DIR = Path("/var/runtime")
LAMBDA_OPT = Path("/opt")
#: where Lambda keeps a managed runtime's interpreter (bin/) and bundled libraries (lib/)
LAMBDA_LANG = Path("/var/lang")

#: the X-Ray daemon's address as functions see it. Lambda's is a link-local address
#: (169.254.79.129:2000) that has no daemon here; loopback keeps an X-Ray SDK's UDP segments
#: inside the sandbox, dropped, instead of sent toward an address Lamina does not own.
XRAY_DAEMON_HOST = "127.0.0.1"
XRAY_DAEMON_PORT = 2000

# Placeholders: each environment replaces them with its role session's when it starts (see
# `EnvironmentContext.credentials`); with authentication off they stay, unchecked, and keep
# the AWS SDK from probing an instance-metadata address.
_DUMMY_KEY_ID = "LAMINAFUNCTIONKEY000"
_DUMMY_SECRET = "lamina-function-secret-not-checked"
_DUMMY_TOKEN = "lamina-function-session-token"


def aws_endpoints(settings: Settings) -> dict[str, str]:
    """`AWS_ENDPOINT_URL_<ID>` for each service: Lamina's own services at Lamina, then the
    server-wide `--aws-endpoint` settings (which may also move those); a function's own
    Environment variables, applied later, win over all of them.

    The global AWS_ENDPOINT_URL, which SDKs use for a service with no variable of its own,
    points at Lamina too: a call to a service nobody pointed anywhere then gets Lamina's clear
    "Lamina does not serve dynamodb; set AWS_ENDPOINT_URL_DYNAMODB" at once, rather than
    going to AWS with credentials AWS never issued. A function that sets AWS_ENDPOINT_URL
    itself moves every such service; the service-specific variables keep Lambda, Logs and
    Events at Lamina whatever it says."""
    env = {"AWS_ENDPOINT_URL": settings.endpoint_url}
    env.update({f"AWS_ENDPOINT_URL_{s.endpoint_id}": settings.endpoint_url for s in SERVED})
    for service, url in settings.aws_endpoints:
        env[f"AWS_ENDPOINT_URL_{service}"] = url
    return env


def lambda_environment(
    config: FunctionConfig,
    settings: Settings,
    runtime: RuntimeInfo,
    task_root: Path,
    opt_dir: Path,
    runtime_dir: Path | None = None,
    lang_dir: Path | None = None,
) -> dict[str, str]:
    """Every variable Lambda sets, except the per-environment AWS_LAMBDA_RUNTIME_API and
    AWS_LAMBDA_LOG_STREAM_NAME, which the environment adds, and the per-invocation
    _X_AMZN_TRACE_ID, which the runtime sets from each invocation's trace header.

    Paths are as the runtime sees them: `task_root` the code, `opt_dir` where the function's
    layers are merged (Lambda's /opt), `runtime_dir` the runtime's own files (by default
    where the runtime has them on the host), `lang_dir` the runtime image (Lambda's
    /var/lang: the interpreter under bin/, the bundled SDK under lib/), None for a custom
    runtime, which has none.
    """
    runtime_root = str(runtime_dir or runtime.runtime_dir)
    opt = str(opt_dir)
    lang = str(lang_dir) if lang_dir is not None else None
    # Lambda's PATH, with the image's bin/ (links to the interpreter) in /var/lang/bin's
    # place: never the directory the host happens to keep the interpreter in.
    path = ["/usr/local/bin", "/usr/bin/", "/bin", "/opt/bin" if opt == "/opt" else f"{opt}/bin"]
    libs = ["/lib64", "/usr/lib64", runtime_root, f"{runtime_root}/lib"]
    libs += [str(task_root), f"{task_root}/lib", f"{opt}/lib"]
    if lang is not None:
        path.insert(0, f"{lang}/bin")
        libs.insert(0, f"{lang}/lib")
    env = {
        "_HANDLER": config.handler,
        **_function_variables(config, settings),
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": runtime_root,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": ":".join(path),
        "LD_LIBRARY_PATH": ":".join(libs),
    }
    if runtime.family is not Family.PROVIDED:
        # Lambda sets no execution environment name for custom runtimes.
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{config.runtime}"
    if runtime.family is Family.PYTHON:
        # Layers' Python paths, then the bundled SDK, then the runtime: Lambda's order (the
        # bootstrap puts the code first).
        minor = ".".join(runtime.version.split(".")[:2])
        python_path = [f"{opt}/python/lib/python{minor}/site-packages", f"{opt}/python"]
        if lang is not None:
            python_path.append(f"{lang}/lib/python{minor}/site-packages")
        env["PYTHONPATH"] = ":".join([*python_path, runtime_root])
    elif runtime.family is Family.JAVA and opt != str(LAMBDA_OPT):
        # Lamina's Java client looks for layers' jars under /opt/java/lib; where a backend
        # shows layers elsewhere (the process backend), it is told where (not a Lambda name).
        env["_LAMINA_OPT"] = opt
    elif runtime.family is Family.NODE:
        major = runtime.version.split(".")[0]
        node_path = [f"{opt}/nodejs/node{major}/node_modules", f"{opt}/nodejs/node_modules"]
        if lang is not None:
            # Lambda's /var/runtime/node_modules: where the bundled SDK is found.
            node_path.append(f"{lang}/lib/node_modules")
        env["NODE_PATH"] = ":".join([*node_path, runtime_root, str(task_root)])
    return env


def _function_variables(config: FunctionConfig, settings: Settings) -> dict[str, str]:
    """What Lambda sets for every function, zip or image: who it is, where it runs, its
    credentials (dummies here; the environment puts the role's in), the endpoints and X-Ray
    addresses, and the log format a JSON-logging function's runtime reads."""
    env = {
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
        **aws_endpoints(settings),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": f"{XRAY_DAEMON_HOST}:{XRAY_DAEMON_PORT}",
        "_AWS_XRAY_DAEMON_ADDRESS": XRAY_DAEMON_HOST,
        "_AWS_XRAY_DAEMON_PORT": str(XRAY_DAEMON_PORT),
    }
    if config.logging.json:
        # What Lambda's runtimes read to log JSON records and drop those under the level.
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        env["AWS_LAMBDA_LOG_LEVEL"] = config.logging.application_log_level or "INFO"
    return env


#: PATH for an image whose config sets none (what container runtimes give such an image)
DEFAULT_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_environment(
    config: FunctionConfig, settings: Settings, image: FunctionImage
) -> dict[str, str]:
    """The variables of a container-image function's runtime, as `lambda_environment` but
    on top of the image's own ENV: the image keeps its PATH, LANG, LAMBDA_TASK_ROOT and the
    like (AWS's base images set them there), and Lambda adds what describes the function.
    No AWS_EXECUTION_ENV or _HANDLER: Lambda sets neither for an image (AWS's base images'
    entry point exports _HANDLER from the command itself). The function's own variables
    are applied over these by the environment."""
    env = dict(image.config.env)
    env.setdefault("PATH", DEFAULT_IMAGE_PATH)
    env.update(_function_variables(config, settings))
    return env
