"""`lamina dev`: deploy, then apply every save to the running functions, with their logs live.

Two ways in: a directory and a handler (one function, made like `lamina deploy` makes it), or
a SAM template (`deploy_stack`, as `lamina deploy --template` does; every function whose
CodeUri is a local directory is watched). Then each burst of saves under a code directory
(`lamina.stacks.watch`) becomes, for every function built from that directory:

    zip → UpdateFunctionCode → wait for LastUpdateStatus Successful
        → with an AutoPublishAlias: PublishVersion, UpdateAlias to it

through the same public API any client uses. Invocations that started before the update finish
on the code they started with; those that start after it run the new code (Lamina's
UpdateFunctionCode gives new invocations new environments and lets busy ones finish).

In template mode the template is watched too: a save of it deploys the stack again, and
watching starts over on the functions it then holds.

Meanwhile one thread follows every function's log group (`lamina.cli.logs.Follower`) and prints
each event prefixed with the function's name. Nothing is deleted on exit.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from lamina.cli.main import _FN, Api, _fail, endpoint_option, main, put_function
from lamina.stacks.client import ApiError, StackClient
from lamina.stacks.watch import Package, package, watch

#: how often an update's status is read while it is in progress (s)
STATUS_POLL_S = 0.02
#: an update still in progress after this long is reported as failed (s)
UPDATE_TIMEOUT_S = 120.0
#: how often the followed log groups are read (s)
LOG_POLL_S = 0.3
_NAME_COLORS = ("cyan", "magenta", "yellow", "blue", "green", "bright_cyan", "bright_magenta")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Target:
    """One deployed function that a code directory's saves go to."""

    name: str
    code_dir: Path
    #: AutoPublishAlias: moved to a version published from each reload
    alias: str | None = None
    #: CodeSha256 of what it runs now (a save that zips to the same is not uploaded)
    sha256: str = ""
    color: str = "cyan"


@dataclass
class Console:
    """Lines from the watcher and the log follower, never interleaved mid-line."""

    color: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, text: str, **style: Any) -> None:
        with self.lock:
            click.echo(click.style(text, **style) if self.color and style else text)
            sys.stdout.flush()

    def tag(self, target: Target) -> str:
        return click.style(target.name, fg=target.color) if self.color else target.name


def function_name(directory: Path) -> str:
    """A function name from a directory's name: Lambda's characters only, at most 64."""
    name = _BAD_NAME_CHARS.sub("-", directory.resolve().name).strip("-")[:64]
    return name or "function"


def _env_pairs(env: tuple[str, ...]) -> dict[str, str]:
    pairs = [e.split("=", 1) for e in env]
    if any(len(p) != 2 or not p[0] for p in pairs):
        _fail("--env takes KEY=VALUE", 2)
    return dict(pairs)


@main.command(name="dev")
@click.argument(
    "directory",
    required=False,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--handler", default=None, help="With DIRECTORY: module.function, e.g. app.handler.")
@click.option("--name", default=None, help="With DIRECTORY: function name [default: its name].")
@click.option("--runtime", default="python3.11", show_default=True, help="With DIRECTORY.")
@click.option("--timeout", type=int, default=None, help="With DIRECTORY: seconds (1-900).")
@click.option("--memory", type=int, default=None, help="With DIRECTORY: MB (128-10240).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="With DIRECTORY.")
@click.option("--role", default=None, help="With DIRECTORY: execution role ARN.")
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A SAM template to deploy and watch (instead of DIRECTORY).",
)
@click.option("--stack", default=None, help="With --template: stack name [default: its dir's].")
@click.option(
    "--parameter-overrides",
    "parameter_overrides",
    multiple=True,
    metavar="K=V ...",
    help="With --template: parameter values (K=V or ParameterKey=K,ParameterValue=V).",
)
@click.option("--strict", is_flag=True, help="With --template: fail on unsupported resources.")
@click.option("--no-logs", is_flag=True, help="Do not follow the functions' logs.")
@endpoint_option
def dev_command(
    directory: Path | None,
    handler: str | None,
    name: str | None,
    runtime: str,
    timeout: int | None,
    memory: int | None,
    env: tuple[str, ...],
    role: str | None,
    template: Path | None,
    stack: str | None,
    parameter_overrides: tuple[str, ...],
    strict: bool,
    no_logs: bool,
    endpoint: str,
) -> None:
    """Deploy DIRECTORY (with --handler) or a SAM --template, then reload each saved change
    into the running functions and print their logs, until Ctrl-C. Nothing is deleted on exit."""
    console = Console(color=sys.stdout.isatty() and not _no_color())
    _interrupt_on_signals()
    api = Api(endpoint)
    source = None
    try:
        if template is not None:
            if directory is not None or handler is not None or name is not None:
                _fail(
                    "--template deploys the template's functions: give no DIRECTORY, "
                    "--handler or --name",
                    2,
                )
            source = _stack_source(template, stack, parameter_overrides, strict)
            try:
                targets = _deploy_template(api, source)
            except DeployFailed as e:
                _fail(str(e))
        else:
            if stack is not None or parameter_overrides or strict:
                _fail("--stack, --parameter-overrides and --strict go with --template", 2)
            if directory is None or handler is None:
                _fail("dev needs DIRECTORY and --handler, or --template FILE", 2)
            config = _function_config(handler, runtime, timeout, memory, env)
            fn_name = name or function_name(directory)
            targets = [_deploy_directory(api, directory, fn_name, config, role)]
    except KeyboardInterrupt:
        console.line("interrupted while deploying")
        sys.exit(130)
    try:
        _loop(api, endpoint, targets, console, source, follow_logs=not no_logs)
    except KeyboardInterrupt:
        console.line("stopped (the functions stay deployed)")
        sys.exit(0)


def _loop(
    api: Api,
    endpoint: str,
    targets: list[Target],
    console: Console,
    source: StackSource | None,
    follow_logs: bool,
) -> None:
    """Watch and reload; in template mode, a save of the template deploys the stack again and
    watching starts over on what it now holds (or, if that deploy fails, on what it held)."""
    # A directory's deployed zip is the baseline (a save before watching starts is caught up);
    # a template's deploy zips its own way, so there the baseline is taken when watching starts.
    seen = {t.code_dir: t.sha256 for t in targets} if source is None else {}
    while True:
        for i, target in enumerate(targets):
            target.color = _NAME_COLORS[i % len(_NAME_COLORS)]
        logs = _start_logs(endpoint, targets, console) if follow_logs else None
        try:
            _watch(api, targets, console, source.template if source else None, seen)
        finally:
            if logs is not None:
                logs.set()
        assert source is not None  # _watch returns only on a save of the template
        console.line(f"{source.template.name} changed: deploying stack {source.stack} again")
        try:
            targets = _deploy_template(api, source)
        except DeployFailed as e:
            console.line(f"deploy failed: {e}", fg="red")


def _function_config(
    handler: str, runtime: str, timeout: int | None, memory: int | None, env: tuple[str, ...]
) -> dict[str, Any]:
    config: dict[str, Any] = {"Handler": handler, "Runtime": runtime}
    if timeout is not None:
        config["Timeout"] = timeout
    if memory is not None:
        config["MemorySize"] = memory
    if env:
        config["Environment"] = {"Variables": _env_pairs(env)}
    return config


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the watcher the same clean way (SIGINT too where the shell
    started this command with it ignored, as it does background jobs)."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def _deploy_directory(
    api: Api, directory: Path, name: str, config: dict[str, Any], role: str | None
) -> Target:
    pkg = package(directory)
    code = {"ZipFile": base64.b64encode(pkg.data).decode()}
    verb, final = put_function(api, name, code, config, role=role)
    click.echo(
        f"{click.style(verb, fg='green')} {final['FunctionArn']} "
        f"({final['Runtime']}, {final['Handler']}, {_files(pkg.files)})"
    )
    return Target(name, directory.resolve(), sha256=str(final.get("CodeSha256", "")))


class DeployFailed(Exception):
    """A template deploy that did not happen (or was rolled back): why."""


@dataclass
class StackSource:
    """Template mode: what `lamina deploy --template` is given, kept to deploy again when the
    template is saved."""

    template: Path
    stack: str
    overrides: dict[str, str]
    strict: bool


def _stack_source(
    template: Path, stack: str | None, overrides: tuple[str, ...], strict: bool
) -> StackSource:
    from lamina.cli.stacks import default_stack_name, parse_overrides

    try:
        params = parse_overrides(overrides)
    except click.BadParameter as e:
        _fail(f"--parameter-overrides: {e.message}", 2)
    return StackSource(template.resolve(), stack or default_stack_name(template), params, strict)


def _deploy_template(api: Api, source: StackSource) -> list[Target]:
    """`lamina deploy --template`'s deploy; the functions with local code, to watch. Raises
    DeployFailed."""
    # Imported here: the provisioning layer (and the SAM translator under it) is heavy, and
    # only this mode needs it.
    from lamina.stacks import TemplateError
    from lamina.stacks.provision import StackFailed, deploy_stack

    name = source.stack
    try:
        result = deploy_stack(
            api,
            source.template,
            stack=name,
            overrides=source.overrides,
            strict=source.strict,
            echo=click.echo,
        )
    except TemplateError as e:
        raise DeployFailed(f"{source.template}: {e.describe()} (nothing was deployed)") from None
    except StackFailed as e:
        raise DeployFailed(f"stack {name} failed, rolled back: {e}") from None
    click.secho(f"deployed stack {name}", fg="green")
    client = StackClient(api)
    targets: list[Target] = []
    for fn in result.functions:
        if fn.code_dir is None:
            click.echo(f"not watched: {fn.function_name} (its code is not a local directory)")
            continue
        try:
            config = client.call("GET", f"{_FN}/{fn.function_name}/configuration")
        except ApiError as e:
            raise DeployFailed(f"{fn.function_name}: {e}") from None
        targets.append(
            Target(
                fn.function_name,
                Path(fn.code_dir).resolve(),
                alias=fn.alias,
                sha256=str(config.get("CodeSha256", "")),
            )
        )
    return targets


def _watch(
    api: Api,
    targets: list[Target],
    console: Console,
    template: Path | None = None,
    seen: dict[Path, str] | None = None,
) -> None:
    """Reload saves until a save of `template` (returns then) or Ctrl-C. `seen` (kept by the
    caller across calls) is each directory's last zip digest: a directory that changed while
    it was not watched (during a template's deploy) is reloaded as soon as watching starts."""
    seen = {} if seen is None else seen
    by_dir: dict[Path, list[Target]] = {}
    for target in targets:
        by_dir.setdefault(target.code_dir, []).append(target)
    for code_dir, group in sorted(by_dir.items()):
        names = ", ".join(t.name for t in group)
        console.line(f"watching {code_dir} → {names}")
    if template is not None:
        console.line(f"watching {template} → the stack")
    client = StackClient(api)

    def apply(code_dir: Path) -> None:
        started = time.monotonic()
        pkg = package(code_dir)
        seen[code_dir] = pkg.sha256
        for target in by_dir[code_dir]:
            reload(client, target, pkg, console, started)

    def ready() -> None:
        for code_dir in sorted(by_dir):
            before = seen.get(code_dir)
            if before is None:
                seen[code_dir] = package(code_dir).sha256
            elif package(code_dir).sha256 != before:
                apply(code_dir)
        console.line("save a file to reload; Ctrl-C to stop")

    files = [template] if template is not None else []
    for touched in watch(by_dir, ready=ready, files=files):
        for code_dir in sorted(touched & by_dir.keys()):
            apply(code_dir)
        if template is not None and template in touched:
            return


def reload(
    client: StackClient, target: Target, pkg: Package, console: Console, started: float
) -> bool:
    """Apply `pkg` to `target` (see the module doc); print what happened; False if it failed
    (the function keeps the code it had)."""
    tag = console.tag(target)
    short = pkg.sha256[:12]
    if pkg.sha256 == target.sha256:
        console.line(f"unchanged {tag} ({_files(pkg.files)}, sha256 {short})", dim=True)
        return True
    try:
        _update_code(client, target.name, pkg)
        where = ""
        if target.alias:
            version = _publish(client, target.name, target.alias, pkg.sha256)
            where = f", {target.alias} → version {version}"
    except ApiError as e:
        console.line(f"reload of {target.name} failed: {e}", fg="red")
        return False
    target.sha256 = pkg.sha256
    took = time.monotonic() - started
    verb = click.style("reloaded", fg="green") if console.color else "reloaded"
    console.line(f"{verb} {tag} ({_files(pkg.files)}, sha256 {short}{where}, {took:.2f} s)")
    return True


def _update_code(client: StackClient, name: str, pkg: Package) -> None:
    body = {"ZipFile": base64.b64encode(pkg.data).decode()}
    client.call("PUT", f"{_FN}/{name}/code", body)
    deadline = time.monotonic() + UPDATE_TIMEOUT_S
    while True:
        config = client.call("GET", f"{_FN}/{name}/configuration")
        status = config.get("LastUpdateStatus")
        if status == "Failed":
            reason = config.get("LastUpdateStatusReason") or "the update failed"
            code = str(config.get("LastUpdateStatusReasonCode") or "UpdateFailed")
            raise ApiError(code, reason, 0)
        if status != "InProgress" and config.get("State") != "Pending":
            return
        if time.monotonic() > deadline:
            raise ApiError("Timeout", f"still updating after {UPDATE_TIMEOUT_S:.0f} s", 0)
        time.sleep(STATUS_POLL_S)


def _publish(client: StackClient, name: str, alias: str, sha256: str) -> str:
    """PublishVersion of what was just uploaded, then the whole alias to it at once (a
    DeploymentPreference's gradual shift is for deploys, not for a development loop)."""
    published = client.call("POST", f"{_FN}/{name}/versions", {"CodeSha256": sha256})
    version = str(published["Version"])
    body = {"FunctionVersion": version, "RoutingConfig": {"AdditionalVersionWeights": {}}}
    client.call("PUT", f"{_FN}/{name}/aliases/{alias}", body)
    return version


def _start_logs(endpoint: str, targets: list[Target], console: Console) -> threading.Event:
    """Follow each function's log group in a daemon thread, from now on, until the event
    returned is set."""
    from lamina.cli.logs import Follower, LogsClient, format_event

    client = LogsClient(endpoint)
    start_ms = int(time.time() * 1000)
    followers: list[tuple[Target, Follower]] = []
    groups: set[str] = set()
    for target in targets:
        group = client.log_group(target.name)
        if group in groups:  # a LoggingConfig shared with an earlier function
            continue
        groups.add(group)
        followers.append((target, Follower(client, group, start_ms)))

    def show(target: Target, event: dict[str, Any]) -> None:
        text = format_event(event, console.color)
        console.line(f"{console.tag(target)} | {text}")

    stop = threading.Event()
    thread = threading.Thread(
        target=_follow_all, args=(followers, show, stop), name="lamina-dev-logs", daemon=True
    )
    thread.start()
    return stop


def _follow_all(
    followers: list[tuple[Target, Any]],
    show: Callable[[Target, dict[str, Any]], None],
    stop: threading.Event,
) -> None:
    from lamina.cli.logs import _GroupMissing

    while not stop.is_set():
        for target, follower in followers:
            try:
                for event in follower.poll():
                    show(target, event)
            except _GroupMissing:
                pass  # not invoked yet
            except SystemExit:
                # LogsClient reported an error (the server gone?) and would end the command:
                # the watcher goes on, and so do the logs once the server answers again.
                stop.wait(5)
        stop.wait(LOG_POLL_S)


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"
