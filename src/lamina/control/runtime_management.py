"""Runtime management controls (Get/PutRuntimeManagementConfig) and runtime version ARNs.

On Lambda a managed runtime is a series of versions (patched builds), each with an ARN, and a
function version's `UpdateRuntimeOn` says when it moves to a newer one. A Lamina host runs one
interpreter per runtime, so a runtime *version* here is that interpreter as found at start-up:
its ARN is `arn:aws:lambda:REGION::runtime:<sha256 of runtime name, interpreter version and
path>`. It changes when the host's interpreter is upgraded or replaced.

- `Auto` (the default) and `FunctionUpdate` run whatever interpreter the host has: there is
  no older build to stay on, so both behave alike on Lamina.
- `Manual` pins the function version to one runtime version ARN, which must be the host's
  current one when it is set. If the host's interpreter later changes, the version refuses to
  start new environments (InvalidRuntimeException on invoke) instead of silently running on
  an interpreter it was not pinned to; setting `Auto` (or pinning the new ARN) lifts it.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.control import validation as v
from lamina.control.aliases import is_alias_name
from lamina.errors import InvalidParameterValueError, InvalidRuntimeError
from lamina.models import LATEST, FunctionConfig
from lamina.runtimes.catalog import RuntimeCatalog
from lamina.settings import Settings
from lamina.store.function_settings import FunctionSettingsStore, RuntimeManagementRow

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

UPDATE_RUNTIME_ON = ("Auto", "Manual", "FunctionUpdate")
_VERSION_ARN = re.compile(
    r"((arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}::"
    r"runtime:.+)|(arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-"
    r"\d{1}:\d{12}:runtime/[A-Za-z0-9_.-]{1,128}/version/[A-Za-z0-9_.-]{1,128}))"
)
_VERSION_ARN_MIN, _VERSION_ARN_MAX = 26, 2048


class RuntimeManagement:
    """Each `$LATEST`'s and version's `UpdateRuntimeOn`, kept in memory (the check on a cold
    start must not touch the database)."""

    def __init__(
        self,
        functions: FunctionService,
        store: FunctionSettingsStore,
        runtimes: RuntimeCatalog,
        settings: Settings,
    ) -> None:
        self._functions = functions
        self._store = store
        self._runtimes = runtimes
        self._settings = settings
        self._configs: dict[tuple[str, str], RuntimeManagementRow] = {}
        self._arns: dict[str, str | None] = {}

    async def load(self) -> None:
        rows = await self._functions.run(self._store.all_runtime_management)
        self._configs = {(r.function_name, r.qualifier): r for r in rows}

    def version_arn(self, runtime: str) -> str | None:
        """The ARN of the runtime version this host runs for `runtime`; None if it has none."""
        if runtime not in self._arns:
            info = self._runtimes.get(runtime)
            if info is None:
                self._arns[runtime] = None
            else:
                identity = f"{info.name}\0{info.version}\0{info.executable}".encode()
                digest = hashlib.sha256(identity).hexdigest()
                self._arns[runtime] = f"arn:aws:lambda:{self._settings.region}::runtime:{digest}"
        return self._arns[runtime]

    def configured_arn(self, config: FunctionConfig) -> str | None:
        """FunctionConfiguration's RuntimeVersionConfig.RuntimeVersionArn: the pinned version
        under Manual, else the one the host runs."""
        row = self._configs.get((config.name, config.version))
        if row is not None and row.runtime_version_arn:
            return row.runtime_version_arn
        return self.version_arn(config.runtime)

    def check_startable(self, config: FunctionConfig) -> None:
        """Refuse to start an environment for a version pinned (Manual) to a runtime version
        this host no longer runs."""
        row = self._configs.get((config.name, config.version))
        if row is None or row.update_runtime_on != "Manual":
            return
        current = self.version_arn(config.runtime)
        if row.runtime_version_arn != current:
            raise InvalidRuntimeError(
                f"The function is pinned to runtime version {row.runtime_version_arn}, which "
                f"this host no longer runs (it runs {current}). Set UpdateRuntimeOn to Auto, "
                "or pin the current version, with PutRuntimeManagementConfig."
            )

    def check_runtime_change(self, name: str, runtime: str) -> None:
        """UpdateFunctionConfiguration may not change the runtime of a `$LATEST` pinned to a
        version of its current one (Lambda's rule)."""
        row = self._configs.get((name, LATEST))
        current = self._functions.latest(name)
        if (
            row is not None
            and row.update_runtime_on == "Manual"
            and current is not None
            and runtime != current.runtime
        ):
            raise InvalidParameterValueError(
                "Cannot change runtime identifier when runtime management configuration is set "
                "to 'Manual'. Change the runtime management configuration to 'Auto' or "
                "'FunctionUpdate', then retry."
            )

    def get(self, ref: FunctionRef) -> tuple[str, RuntimeManagementRow]:
        """GetRuntimeManagementConfig: (the version's ARN, its setting)."""
        config = self._version(ref)
        row = self._configs.get((config.name, config.version))
        if row is None:
            row = RuntimeManagementRow(config.name, config.version, "Auto", None)
        return self._functions.arn(config.name, config.version), row

    async def put(
        self, ref: FunctionRef, update_runtime_on: Any, version_arn: Any
    ) -> tuple[str, RuntimeManagementRow]:
        """PutRuntimeManagementConfig, with Lambda's rules: an ARN with Manual only, and
        Manual needs one."""
        c = v.Constraints()
        if update_runtime_on is None:
            c.fail(None, "updateRuntimeOn", "Member must not be null")
        elif update_runtime_on not in UPDATE_RUNTIME_ON:
            c.fail(
                update_runtime_on,
                "updateRuntimeOn",
                f"Member must satisfy enum value set: [{', '.join(UPDATE_RUNTIME_ON)}]",
            )
        if version_arn is not None:
            if isinstance(version_arn, str) and len(version_arn) < _VERSION_ARN_MIN:
                c.fail(
                    version_arn,
                    "runtimeVersionArn",
                    f"Member must have length greater than or equal to {_VERSION_ARN_MIN}",
                )
            else:
                c.string(
                    version_arn,
                    "runtimeVersionArn",
                    max_len=_VERSION_ARN_MAX,
                    pattern=_VERSION_ARN,
                )
        c.check()
        config = self._version(ref)
        if update_runtime_on == "Manual":
            if version_arn is None:
                raise InvalidParameterValueError(
                    "RuntimeVersionArn must be specified when UpdateRuntimeOn is Manual."
                )
            current = self.version_arn(config.runtime)
            if version_arn != current:
                raise InvalidParameterValueError(
                    f"Runtime version {version_arn} is not a version of {config.runtime} "
                    f"available on this host (available: {current or 'none'})."
                )
        elif version_arn is not None:
            raise InvalidParameterValueError(
                "RuntimeVersionArn can only be specified when UpdateRuntimeOn is Manual."
            )
        row = RuntimeManagementRow(
            config.name,
            config.version,
            update_runtime_on,
            version_arn if update_runtime_on == "Manual" else None,
        )
        if not await self._functions.run(self._store.put_runtime_management, row):
            raise self._functions.not_found(config.name, config.version)
        self._configs[(config.name, config.version)] = row
        # Environments already running were started under the old setting.
        await self._functions.notify(config.name, config.version)
        return self._functions.arn(config.name, config.version), row

    def forget(self, name: str, version: str | None) -> None:
        """A version (`version`) or the whole function (None) is gone."""
        for key in [k for k in self._configs if k[0] == name]:
            if version is None or key[1] == version:
                del self._configs[key]

    def _version(self, ref: FunctionRef) -> FunctionConfig:
        """`$LATEST` or a published version (an alias names neither)."""
        qualifier = ref.qualifier or LATEST
        self._functions.require(ref.name)
        config = None if is_alias_name(qualifier) else self._functions.version(ref.name, qualifier)
        if config is None:
            raise self._functions.not_found(ref.name, ref.qualifier)
        return config
