"""The Java runtimes (`java17`, ...): Lamina's own runtime client, the handler forms of
aws-lambda-java-core, POJO and stream input/output, the error shape, the Context object,
JAVA_TOOL_OPTIONS and the heap, as AWS's Java runtime behaves.

The functions are compiled here, at test time, with the JDK that runs them, against our own
stand-in for aws-lambda-java-core (tests/integration/java/core: the same package, names and
signatures; the real jar is on Maven Central, which these machines cannot reach). They are
packaged as functions are for Lambda: classes at the zip's root, dependencies in lib/*.jar.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ROLE, Functions, Server, lamina

from lamina.runtimes.java import JAVA_RUNTIMES
from lamina.runtimes.java.jdk import best_by_major, find_jdks

SOURCES = Path(__file__).parent / "java"
_JDKS = {m: j for m, j in best_by_major(find_jdks()).items() if j.has_javac}

pytestmark = pytest.mark.skipif(17 not in _JDKS, reason="no JDK 17 (javac) on this host")

RUNTIME = "java17"
#: other Java runtimes this host can run (each gets a smoke test)
OTHER_RUNTIMES = sorted(
    name for name, major in JAVA_RUNTIMES.items() if major in _JDKS and name != RUNTIME
)


def _jar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return buf.getvalue()


def _classes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.class")}


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The test functions, compiled with JDK 17's javac and packaged three ways: a zip with
    the (stand-in) core library in lib/, one fat jar, and a zip without the core library
    (the runtime provides those interfaces, as AWS's does)."""
    out = tmp_path_factory.mktemp("java-classes")
    core, layer, functions = out / "core", out / "layer", out / "functions"
    javac = str(_JDKS[17].javac)

    def compile_(what: str, into: Path, classpath: str = "") -> None:
        sources = [str(p) for p in (SOURCES / what).rglob("*.java")]
        cp = ["-cp", classpath] if classpath else []
        # Java 8 class files: the same package runs on every Java runtime the host has.
        release = ["--release", "8", "-Xlint:-options"]
        subprocess.run([javac, *release, *cp, "-d", str(into), *sources], check=True, timeout=300)

    compile_("core", core)
    compile_("layer", layer)
    compile_("functions", functions, f"{core}:{layer}")
    core_jar = _jar(_classes(core))
    fn = _classes(functions)
    return {
        "zip": _jar({**fn, "lib/aws-lambda-java-core.jar": core_jar}),
        "jar": _jar({**fn, **_classes(core)}),
        "bare": _jar(fn),
        # the function brings its own JSON serializer, as a service
        "custom": _jar(
            {
                **fn,
                "META-INF/services/com.amazonaws.services.lambda.runtime.CustomPojoSerializer": (
                    b"example.TaggingSerializer\n"
                ),
            }
        ),
        # a layer: its jars under java/lib/ (Lambda's /opt/java/lib)
        "layer": _jar({"java/lib/shout.jar": _jar(_classes(layer))}),
    }


def create(
    functions: Functions,
    packages: dict[str, bytes],
    handler: str,
    kind: str = "zip",
    runtime: str = RUNTIME,
    **kwargs: Any,
) -> str:
    kwargs.setdefault("MemorySize", 512)
    kwargs.setdefault("Timeout", 30)
    name: str = functions.create_zip(packages[kind], handler, runtime, **kwargs)["FunctionName"]
    return name


def invoke(lam: Any, name: str, payload: Any, **kw: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload), **kw)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def ok(lam: Any, name: str, payload: Any, **kw: Any) -> Any:
    resp, out = invoke(lam, name, payload, **kw)
    assert "FunctionError" not in resp, out
    return out


def failed(lam: Any, name: str, payload: Any) -> Any:
    resp, out = invoke(lam, name, payload)
    assert resp["FunctionError"] == "Unhandled", out
    return out


def function_log(server: Server, name: str, marker: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = "\n".join(server.streams_text(f"/aws/lambda/{name}").values())
        if marker in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"no log of {name} contains {marker!r}")


PERSON = {
    "name": "Ada",
    "age": 36,
    "tags": ["math", "code"],
    "address": {"city": "London", "zip": 12345},
    "unknownProperty": "ignored",
}
GREETING = {
    "message": "Hello, Ada!",
    "nextAge": 37,
    "tags": ["MATH", "CODE"],
    "where": {"city": "London", "zip": 12345},
    "adult": True,
}


# -- handlers and input/output ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "jar", "bare"])
def test_pojo_request_handler_class(
    lam: Any, functions: Functions, packages: dict[str, bytes], kind: str
) -> None:
    """`package.Class` implementing RequestHandler<Person, Greeting>: JSON to a POJO (setters,
    public fields, a list, a nested object; unknown properties ignored) and the result's
    getters back to JSON, null properties left out. It runs whether the package bundles the
    core library in lib/, in a fat jar, or not at all."""
    name = create(functions, packages, "example.PojoHandler", kind)
    assert ok(lam, name, PERSON) == GREETING
    # Missing input properties are the Java defaults.
    assert ok(lam, name, {"name": "Bob"}) == {
        "message": "Hello, Bob!",
        "nextAge": 1,
        "tags": [],
        "where": {},
        "adult": False,
    }


def test_map_method_handler_types(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """`Class::method` taking Map<String, Object>: JSON values arrive as the natural Java
    types Lambda's serializer gives them; the returned Map is serialized as is."""
    name = create(functions, packages, "example.MapHandler::handle")
    event = {
        "s": "text é",
        "n": 1,
        "big": 12345678901,
        "f": 1.5,
        "b": True,
        "l": [1, "two"],
        "o": {"a": None},
        "z": None,
    }
    resp, out = invoke(lam, name, event)
    assert "FunctionError" not in resp, out
    assert out["keys"] == sorted(event)
    assert out["types"] == {
        "s": "java.lang.String",
        "n": "java.lang.Integer",
        "big": "java.lang.Long",
        "f": "java.lang.Double",
        "b": "java.lang.Boolean",
        "l": "java.util.ArrayList",
        "o": "java.util.LinkedHashMap",
        "z": "null",
    }
    assert out["echo"] == event
    assert out["requestId"] == resp["ResponseMetadata"]["RequestId"]


def test_request_stream_handler(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """RequestStreamHandler gets the raw payload bytes and writes the raw response."""
    name = create(functions, packages, "example.StreamHandler")
    payload = json.dumps({"say": "hi there"})
    resp = lam.invoke(FunctionName=name, Payload=payload)
    out = json.loads(resp["Payload"].read())
    assert out == {"raw": payload, "upper": payload.upper()}
    function_log(server, name, f"stream handler read {len(payload)} bytes")


@pytest.mark.parametrize(
    ("handler", "event", "expected"),
    [
        pytest.param("example.Methods::shout", "hi", "HI!", id="static-string"),
        pytest.param("example.Methods::sum", [1, 2, 3], 6, id="list-and-context"),
        pytest.param("example.Methods::pick", "x", "with-context", id="overload-longest"),
        pytest.param("example.Methods::raw", {"k": "v"}, [10], id="stream-method"),
        pytest.param("example.Methods::nothing", "x", None, id="void-returns-null"),
        pytest.param("example.Plain::hello", {"who": "you"}, "hello you", id="no-interfaces"),
    ],
)
def test_method_handler_signatures(
    lam: Any,
    functions: Functions,
    packages: dict[str, bytes],
    handler: str,
    event: Any,
    expected: Any,
) -> None:
    """The method signatures Lambda accepts: (input), (input, Context), (InputStream,
    OutputStream, Context), static or not; among overloads the longest wins."""
    name = create(functions, packages, handler)
    assert ok(lam, name, event) == expected


def test_layer_jars_on_the_class_path(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """A layer's java/lib/*.jar (Lambda's /opt/java/lib) is on the function's class path."""
    layer = lam.publish_layer_version(
        LayerName="t-java-shout",
        Content={"ZipFile": packages["layer"]},
        CompatibleRuntimes=[RUNTIME],
    )
    try:
        name = create(
            functions,
            packages,
            "example.UsesLayer::handleRequest",
            Layers=[layer["LayerVersionArn"]],
        )
        assert ok(lam, name, "hi") == "HI (from a layer)"
    finally:
        lam.delete_layer_version(LayerName="t-java-shout", VersionNumber=layer["Version"])


def test_custom_pojo_serializer(lam: Any, functions: Functions, packages: dict[str, bytes]) -> None:
    """A CustomPojoSerializer the package declares (META-INF/services) maps the POJO
    handler's input and output instead of the runtime's mapper, as on AWS."""
    name = create(functions, packages, "example.Methods::shout", "custom")
    resp = lam.invoke(FunctionName=name, Payload=b'{"a":1}')
    assert "FunctionError" not in resp
    assert resp["Payload"].read() == b'"custom:RAW:{"A":1}!"'


def test_handler_instance_is_kept_between_invocations(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """The handler's class is instantiated once, at init: a warm invoke reuses it."""
    name = create(functions, packages, "example.Methods::instance")
    assert ok(lam, name, {}) == ok(lam, name, {})


# -- errors ------------------------------------------------------------------------------


def test_error_shape_with_cause(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """An exception from the handler: Lambda's Java error document (errorMessage, errorType,
    stackTrace of the user's frames, the cause in the same shape), also in the log."""
    name = create(functions, packages, "example.Fail::handleRequest")
    out = failed(lam, name, {})
    assert out["errorMessage"] == "outer failure"
    assert out["errorType"] == "java.lang.IllegalStateException"
    assert out["stackTrace"][0].startswith("example.Fail.handleRequest(Fail.java:")
    assert not any("lamina.runtime" in frame for frame in out["stackTrace"])
    assert out["cause"]["errorType"] == "java.io.IOException"
    assert out["cause"]["errorMessage"] == "inner cause"
    assert isinstance(out["cause"]["stackTrace"], list)
    text = function_log(server, name, "outer failure: java.lang.IllegalStateException")
    assert "about to fail" in text
    # The environment survives a handler's exception.
    assert failed(lam, name, {})["errorMessage"] == "outer failure"


def test_bad_json_for_pojo_is_a_parse_error(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    name = create(functions, packages, "example.PojoHandler")
    out = failed(lam, name, {"age": "not a number"})
    assert out["errorMessage"] == "An error occurred during JSON parsing"
    assert out["errorType"] == "java.lang.RuntimeException"
    assert out["cause"]["errorType"] == "java.lang.IllegalArgumentException"


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param(
            "example.Missing",
            {
                "errorMessage": "Class not found: example.Missing",
                "errorType": "java.lang.ClassNotFoundException",
            },
            id="class-not-found",
        ),
        pytest.param(
            "example.Methods::absent",
            {
                "errorMessage": "No public method named absent with appropriate method "
                "signature found on class example.Methods"
            },
            id="method-not-found",
        ),
        pytest.param(
            "example.Plain",
            {
                "errorMessage": "Class does not implement an appropriate handler interface: "
                "example.Plain"
            },
            id="no-handler-interface",
        ),
    ],
)
def test_handler_not_found(
    lam: Any,
    functions: Functions,
    packages: dict[str, bytes],
    handler: str,
    expected: dict[str, str],
) -> None:
    """As on AWS, a handler that cannot be found fails each invocation (not the init)."""
    name = create(functions, packages, handler)
    assert failed(lam, name, {}) == expected
    assert failed(lam, name, {}) == expected


def test_static_initializer_failure_is_an_init_error(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    name = create(functions, packages, "example.BadInit::handleRequest")
    out = failed(lam, name, {})
    assert out["errorType"] == "java.lang.ExceptionInInitializerError"
    assert out["errorMessage"].startswith("Error loading class example.BadInit")
    function_log(server, name, "java.lang.IllegalArgumentException: static init failed")


def test_constructor_failure_is_an_init_error(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    name = create(functions, packages, "example.BadConstructor::handleRequest")
    assert failed(lam, name, {}) == {
        "errorMessage": "constructor refused",
        "errorType": "java.lang.UnsupportedOperationException",
    }


def test_out_of_memory_error_ends_the_environment(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """Past the heap (85% of MemorySize): the handler's OutOfMemoryError is the answer, and
    the JVM exits after it (a VM error), so the next invocation gets a fresh environment."""
    name = create(functions, packages, "example.Hog::handleRequest", MemorySize=256)
    assert ok(lam, name, {"mb": 8}) == "kept 8 MB"
    out = failed(lam, name, {"beyondHeap": True})
    assert out["errorType"] == "java.lang.OutOfMemoryError", out
    # A new environment (a fresh heap) runs the next invocation.
    assert ok(lam, name, {"mb": 8}) == "kept 8 MB"


def test_timeout(lam: Any, functions: Functions, packages: dict[str, bytes]) -> None:
    name = create(functions, packages, "example.Sleep::handleRequest", Timeout=2)
    out = failed(lam, name, {"ms": 20000})
    assert out["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in out["errorMessage"]
    assert ok(lam, name, {"ms": 1}) == "woke"  # a new environment


# -- the context, the environment, the JVM ----------------------------------------------


def test_context_env_and_jvm(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """Every Context getter, the function's environment, JAVA_TOOL_OPTIONS and the heap
    Lambda sizes from MemorySize (85%); System.out and LambdaLogger lines in the function's
    log stream (a logger message is one event); REPORT with Init Duration."""
    name = create(
        functions,
        packages,
        "example.Probe::handleRequest",
        MemorySize=512,
        Timeout=30,
        Environment={
            "Variables": {
                "GREETING": "hej",
                "JAVA_TOOL_OPTIONS": "-Dlamina.probe=from-tool-options",
            }
        },
    )
    client_context = {
        "client": {"app_title": "Probe App"},
        "custom": {"k": "v"},
        "env": {"platform": "Android"},
    }
    resp, out = invoke(
        lam,
        name,
        {},
        ClientContext=base64.b64encode(json.dumps(client_context).encode()).decode(),
    )
    assert "FunctionError" not in resp, out
    assert out["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert out["functionName"] == name
    assert out["functionVersion"] == "$LATEST"
    assert out["invokedArn"].endswith(f":function:{name}")
    assert out["logGroup"] == f"/aws/lambda/{name}"
    assert out["memory"] == 512
    assert 0 < out["remaining"] <= 30000
    assert out["identity"] is None
    assert out["custom"] == {"k": "v"}
    assert out["clientEnv"] == {"platform": "Android"}
    assert out["appTitle"] == "Probe App"
    assert out["env"]["GREETING"] == "hej"
    assert out["env"]["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert out["env"]["AWS_EXECUTION_ENV"] == "AWS_Lambda_java17"
    assert out["env"]["_HANDLER"] == "example.Probe::handleRequest"
    assert out["env"]["TZ"] == ":UTC"
    assert out["cwd"] == out["env"]["LAMBDA_TASK_ROOT"]
    assert out["toolProperty"] == "from-tool-options"
    assert out["javaVersion"] == "17"
    assert out["encoding"] == "UTF-8"
    # -XX:MaxHeapSize=85% of 512 MB; the JVM reports a little less (one survivor space).
    assert 0.70 * 512 * 2**20 < out["maxHeap"] <= 0.85 * 512 * 2**20
    text = function_log(server, name, "REPORT RequestId: " + out["requestId"])
    streams = server.streams_text(f"/aws/lambda/{name}")
    assert out["logStream"] in streams
    assert "Picked up JAVA_TOOL_OPTIONS: -Dlamina.probe=from-tool-options" in text
    assert "probe stdout line\n" in text
    assert "probe logger line\rsecond line of the same event\n" in text
    assert "probe global logger line\n" in text
    report = next(line for line in text.splitlines() if line.startswith("REPORT"))
    assert "\tInit Duration: " in report


def test_logger_levels_text_and_json(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """LambdaLogger with levels: "[LEVEL] message" in text format; in JSON format a record
    per message (timestamp, level, message, AWSRequestId), those below the function's
    ApplicationLogLevel dropped."""
    text_fn = create(functions, packages, "example.Levels::handleRequest")
    assert ok(lam, text_fn, {}) == "logged"
    text = function_log(server, text_fn, "level-none")
    assert "[DEBUG] level-debug\n" in text and "[INFO] level-info\n" in text
    assert "\nlevel-none\n" in text
    json_fn = create(
        functions,
        packages,
        "example.Levels::handleRequest",
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO"},
    )
    resp, out = invoke(lam, json_fn, {})
    assert out == "logged"
    function_log(server, json_fn, "level-none")
    records = [
        json.loads(m)
        for _, m in server.log_events(f"/aws/lambda/{json_fn}")
        if m.startswith("{") and "level-" in m
    ]
    by_message = {r["message"]: r for r in records}
    assert set(by_message) == {"level-info", "level-error", "level-none"}
    assert by_message["level-error"]["level"] == "ERROR"
    assert by_message["level-none"]["level"] == "UNDEFINED"
    assert by_message["level-info"]["AWSRequestId"] == resp["ResponseMetadata"]["RequestId"]
    assert by_message["level-info"]["timestamp"].endswith("Z")


def test_uncaught_error_is_an_error_record_in_json_format(
    server: Server, lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    name = create(
        functions, packages, "example.Fail::handleRequest", LoggingConfig={"LogFormat": "JSON"}
    )
    failed(lam, name, {})
    function_log(server, name, "outer failure")
    records = [
        json.loads(m)
        for _, m in server.log_events(f"/aws/lambda/{name}")
        if m.startswith("{") and "outer failure" in m
    ]
    assert len(records) == 1 and records[0]["level"] == "ERROR"
    assert "java.lang.IllegalStateException: outer failure" in records[0]["message"]


def test_heap_follows_memory_size(
    lam: Any, functions: Functions, packages: dict[str, bytes]
) -> None:
    """At Lambda's smallest size too: the JVM fits in 128 MB."""
    name = create(functions, packages, "example.Probe::handleRequest", MemorySize=128)
    out = ok(lam, name, {})
    assert 0.70 * 128 * 2**20 < out["maxHeap"] <= 0.85 * 128 * 2**20


def test_lamina_deploy_a_jar(
    server: Server, lam: Any, packages: dict[str, bytes], tmp_path: Path
) -> None:
    """`lamina deploy NAME app.jar --runtime java17`: a fat jar is the package as it is."""
    jar = tmp_path / "app.jar"
    jar.write_bytes(packages["jar"])
    name = f"t-java-deploy-{time.monotonic_ns() % 10**8}"
    args = ["deploy", name, str(jar), "--runtime", RUNTIME, "--handler", "example.PojoHandler"]
    try:
        out = lamina(*args, "--memory", "512", endpoint=server.endpoint)
        assert out.returncode == 0, out.stderr
        assert f"({RUNTIME}, example.PojoHandler" in out.stdout
        assert ok(lam, name, PERSON) == GREETING
    finally:
        lam.delete_function(FunctionName=name)


# -- which runtimes ----------------------------------------------------------------------


def test_runtime_without_its_jdk_is_refused(server: Server, lam: Any) -> None:
    """A Java runtime Lamina implements whose JDK this host lacks is refused at create time,
    naming what is missing; `lamina runtimes` lists it as unavailable."""
    missing = next(n for n, major in JAVA_RUNTIMES.items() if major not in _JDKS)
    major = JAVA_RUNTIMES[missing]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.create_function(
            FunctionName="t-java-missing",
            Runtime=missing,
            Role=ROLE,
            Handler="example.PojoHandler",
            Code={"ZipFile": _jar({"x.txt": b"x"})},
        )
    message = err.value.response["Error"]["Message"]
    have = ", ".join(str(m) for m in sorted(_JDKS))
    assert f"{missing} needs a JDK {major}; this host has {have}" in message
    listed = lamina("runtimes", endpoint=server.endpoint)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith("java17 ") and "java" in line for line in lines), listed.stdout
    assert any(line.startswith(missing + " ") and "needs a JDK" in line for line in lines)


@pytest.mark.parametrize("runtime", OTHER_RUNTIMES)
def test_other_java_runtimes(
    lam: Any, functions: Functions, packages: dict[str, bytes], runtime: str
) -> None:
    """Every other Java runtime whose JDK this host has runs the same package."""
    name = create(functions, packages, "example.PojoHandler", runtime=runtime)
    assert ok(lam, name, PERSON) == GREETING
