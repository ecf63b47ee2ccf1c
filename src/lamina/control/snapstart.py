"""SnapStart's rules (Lambda's `SnapStart: {"ApplyOn": ...}`): what may have it, the state a
published version takes while its template is made, and how that state settles.

A function with `ApplyOn: PublishedVersions` keeps running `$LATEST` as any other function
(it is never snapshotted, as on Lambda). Each version published from it is stored `Pending`
(StateReasonCode `Creating`); the scheduler (`lamina.scheduler.snapshots`) then runs the
version's init once in a template sandbox and the version settles through
`FunctionService.settle`, the same path image pulls take (`control.images`): `Active`, or
`Failed` with Lambda's StateReasonCode and the init's error as StateReason.

Lamina snapshots Python runtimes only (3.12 and later, as Lambda); Lambda also has Java 11+
and .NET 8+. Lambda's other exclusions apply: no container images (Lamina's restore is a
fork of the Python bootstrap), no EFS (Lamina has no FileSystemConfigs at all), no
ephemeral storage above 512 MB, no provisioned concurrency on a SnapStart version.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    SnapStartNotReadyError,
)
from lamina.models import FunctionConfig, FunctionState

APPLY_ON = ("PublishedVersions", "None")
#: the configuration fields whose change may make a SnapStart function's setting invalid
FIELDS = ("snap_start", "runtime", "ephemeral_storage")
#: Lambda's ceiling of /tmp for a SnapStart function (MB)
EPHEMERAL_MAX_MB = 512
_PYTHON = re.compile(r"python3\.(\d+)$")
#: the first Python minor version Lambda (and Lamina) snapshots
_PYTHON_MIN_MINOR = 12

#: the StateReason of a version while its template is made
CREATING = "Lambda is creating a snapshot of the function's initialized execution environment."


def apply_on(c: v.Constraints, value: Any) -> str | None:
    """`SnapStart`'s ApplyOn (None: not given, or given without an ApplyOn)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail(value, "snapStart", "Member must be a structure")
        return None
    mode = value.get("ApplyOn")
    if mode is None:
        return None
    if mode not in APPLY_ON:
        c.fail(
            mode,
            "snapStart.applyOn",
            "Member must satisfy enum value set: [" + ", ".join(APPLY_ON) + "]",
        )
        return None
    return str(mode)


def runtime_supported(runtime: str) -> bool:
    m = _PYTHON.match(runtime)
    return m is not None and int(m.group(1)) >= _PYTHON_MIN_MINOR


def check(config: FunctionConfig) -> None:
    """Refuse a configuration (as it would be after a create or update) that has SnapStart
    on with something Lambda does not combine it with (InvalidParameterValueException)."""
    check_fields(
        config.snap_start,
        config.runtime,
        config.package_type == "Image" or config.image is not None,
        config.ephemeral_storage,
    )


def check_fields(apply: str, runtime: str, is_image: bool, ephemeral_storage: int) -> None:
    """`check`, on the fields that matter (a create checks them before it has a config)."""
    if apply != "PublishedVersions":
        return
    if is_image:
        raise InvalidParameterValueError(
            "SnapStart is not supported for functions with PackageType Image in Lamina "
            "(Lamina snapshots the Python bootstrap, python3.12 and later)."
        )
    if not runtime_supported(runtime):
        raise InvalidParameterValueError(
            f"{runtime} is not supported for SnapStart enabled functions. Lamina snapshots "
            "Python runtimes only (python3.12 and later); Lambda also supports java11 and "
            "later and dotnet8."
        )
    if ephemeral_storage > EPHEMERAL_MAX_MB:
        raise InvalidParameterValueError(
            "SnapStart is not supported for functions with ephemeral storage greater than "
            f"{EPHEMERAL_MAX_MB} MB (EphemeralStorage.Size: {ephemeral_storage})."
        )


def refuse_provisioned(config: FunctionConfig) -> None:
    """PutProvisionedConcurrencyConfig on a SnapStart version (or an alias of one)."""
    if config.snap_start_on:
        raise InvalidParameterValueError(
            "Provisioned concurrency is not supported for function versions with SnapStart "
            f"enabled ({config.name}:{config.version})."
        )


def published(config: FunctionConfig) -> FunctionConfig:
    """The state a version takes when it is published: Pending while its template is made
    (only for a SnapStart function; others keep theirs)."""
    if config.snap_start != "PublishedVersions" or config.state is FunctionState.FAILED:
        return config
    return replace(
        config,
        state=FunctionState.PENDING,
        state_reason=CREATING,
        state_reason_code="Creating",
    )


def building(config: FunctionConfig) -> bool:
    """Whether the version's template is being made (it must not be invoked yet)."""
    return config.snap_start_on and config.state is FunctionState.PENDING


def require_invocable(config: FunctionConfig) -> None:
    """Before an invoke of `config`: a SnapStart version whose template is being made gets
    SnapStartNotReadyException (409), a Failed one what any Failed function gets."""
    if config.state is FunctionState.ACTIVE:
        return
    if building(config):
        raise SnapStartNotReadyError(SnapStartNotReadyError.MESSAGE)
    raise ResourceConflictError(
        "The operation cannot be performed at this time. The function is currently in the "
        f"following state: {config.state.value}"
    )


#: the init's errorType → Lambda's StateReasonCode of a version whose snapshot failed
_REASON_CODES = {
    "Sandbox.Timedout": "FunctionError.InitTimeout",
    "Runtime.InvalidEntrypoint": "FunctionError.InvalidEntryPoint",
    "Extension.Crash": "FunctionError.ExtensionInitError",
    "Runtime.OutOfMemory": "FunctionError.InitResourceExhausted",
}


def failure_reason(payload: bytes) -> tuple[str, str]:
    """(StateReasonCode, StateReason) of a version whose template's init failed with
    `payload` (the Runtime API's error body)."""
    error_type, message = "Runtime.Unknown", payload.decode(errors="replace")
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_type = str(body.get("errorType") or error_type)
        message = str(body.get("errorMessage") or "")
    code = _REASON_CODES.get(error_type, "FunctionError.RuntimeInitError")
    reason = f"{error_type}: {message}" if message else error_type
    return code, f"Lambda could not create the SnapStart snapshot: {reason}"[:1024]


def settled(
    version: str, revision_id: str, failure: tuple[str, str] | None, config: FunctionConfig
) -> FunctionConfig | None:
    """`config` once the template of version `version` (as of `revision_id`) is made
    (`failure` None) or could not be: a `Settle` change (see `control.images`)."""
    if config.version != version or config.revision_id != revision_id:
        return None
    if not building(config):
        return None
    if failure is None:
        return replace(
            config, state=FunctionState.ACTIVE, state_reason=None, state_reason_code=None
        )
    code, reason = failure
    return replace(config, state=FunctionState.FAILED, state_reason=reason, state_reason_code=code)
