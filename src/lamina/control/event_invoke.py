"""Asynchronous invocation settings (the FunctionEventInvokeConfig operations), and the rules for
where Lamina may send an asynchronous event when it is done with it: destinations and the
dead-letter queue (`DeadLetterConfig`).

One configuration per function qualifier: `$LATEST` (which the unqualified function also
means), a version or an alias. They do not fall back to one another: an alias has its own
configuration or none. They are kept in memory, loaded at start-up, because the asynchronous
dispatcher reads `effective()` for every event. A version's or an alias's configuration is
deleted in the store together with it (one transaction) and dropped here by `forget`; a
function's by `forget_function`.

Lambda sends these events to SQS queues, SNS topics, EventBridge buses, S3 buckets and Lambda
functions. Lamina has only functions so far: a target must be a function of this server's region
and account that exists (which stands in for Lambda's check that the execution role may invoke
it), and not the function itself (Lambda's rule: a success record sent to the function that
produced it would invoke it forever).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lamina import limits
from lamina.arns import FunctionRef
from lamina.control import listing
from lamina.control import validation as v
from lamina.control.aliases import is_alias_name
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError
from lamina.models import LATEST, EventInvokeConfig
from lamina.settings import Settings
from lamina.store import MetadataStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

#: ListFunctionEventInvokeConfigs' MaxItems (its own maximum in botocore's model)
LIST_MAX_ITEMS = 50

# DestinationArn as botocore's model spells it; the empty string means "no destination".
_DESTINATION = re.compile(
    r"$|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:"
    r"((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
_DESTINATION_MAX_CHARS = 350
_ARN = re.compile(
    r"arn:(?P<partition>[^:]*):(?P<service>[^:]*):(?P<region>[^:]*):(?P<account>[^:]*):"
    r"(?P<resource>.*)"
)
_FUNCTION = re.compile(
    r"function:(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
#: what Lambda can send events to and Lamina cannot yet, by the ARN's service
_NOT_YET = {
    "sqs": ("Amazon SQS queues", "SQS"),
    "sns": ("Amazon SNS topics", "SNS"),
    "events": ("Amazon EventBridge event buses", "EventBridge"),
    "s3": ("Amazon S3 buckets", "S3"),
}
#: DestinationConfig's members, their domain names and where a constraint names them
_MEMBERS = (
    ("OnSuccess", "on_success", "destinationConfig.onSuccess"),
    ("OnFailure", "on_failure", "destinationConfig.onFailure"),
)


def _now() -> datetime:
    return datetime.now(UTC)


class EventInvokeConfigs:
    def __init__(
        self, functions: FunctionService, metadata: MetadataStore, settings: Settings
    ) -> None:
        self._functions = functions
        self._metadata = metadata
        self._settings = settings
        self._configs: dict[tuple[str, str], EventInvokeConfig] = {}
        # Update reads, merges and writes: one write at a time keeps a merge from losing
        # another's change.
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        configs = await self._functions.run(self._metadata.all_event_invoke)
        self._configs = {(c.function_name, c.qualifier): c for c in configs}

    # -- reads ---------------------------------------------------------------------

    def effective(self, name: str, qualifier: str | None) -> EventInvokeConfig | None:
        """The configuration of exactly this qualifier (None or "" is `$LATEST`), or None if
        it has none: an alias does not fall back to `$LATEST`. No I/O (the dispatcher's path).
        """
        return self._configs.get((name, qualifier or LATEST))

    def get(self, ref: FunctionRef) -> EventInvokeConfig:
        qualifier = self._resolve(ref)
        config = self._configs.get((ref.name, qualifier))
        if config is None:
            raise self._no_config(ref.name, qualifier)
        return config

    def list_configs(
        self, ref: FunctionRef, marker: str | None, max_items: int | None
    ) -> tuple[list[EventInvokeConfig], str | None]:
        """A page of the function's configurations (`$LATEST`, versions by number, aliases
        by name) and the marker of the next page, if there is one."""
        if ref.qualifier:
            raise InvalidParameterValueError(
                "ListFunctionEventInvokeConfigs takes a function name or ARN without a version "
                "or alias."
            )
        self._functions.require(ref.name)
        c = v.Constraints()
        limit = v.max_items(c, max_items, LIST_MAX_ITEMS)
        c.check()
        configs = (config for (name, _), config in self._configs.items() if name == ref.name)
        return listing.page(
            "ListFunctionEventInvokeConfigs", configs, lambda c: c.qualifier, limit, marker
        )

    # -- writes --------------------------------------------------------------------

    async def put(
        self, ref: FunctionRef, retries: Any = None, event_age: Any = None, destinations: Any = None
    ) -> EventInvokeConfig:
        """PutFunctionEventInvokeConfig: the whole configuration (what is left out is unset)."""
        return await self._write(ref, retries, event_age, destinations, merge=False)

    async def update(
        self, ref: FunctionRef, retries: Any = None, event_age: Any = None, destinations: Any = None
    ) -> EventInvokeConfig:
        """UpdateFunctionEventInvokeConfig: change only what is given, in a configuration that
        exists (as on Lambda, which answers ResourceNotFoundException otherwise). A
        DestinationConfig member given (even `{}`) replaces that destination; one left out
        keeps it."""
        return await self._write(ref, retries, event_age, destinations, merge=True)

    async def delete(self, ref: FunctionRef) -> None:
        qualifier = self._resolve(ref)
        async with self._writing:
            if (ref.name, qualifier) not in self._configs:
                raise self._no_config(ref.name, qualifier)
            await self._functions.run(self._metadata.delete_event_invoke, ref.name, qualifier)
            self._configs.pop((ref.name, qualifier), None)
        await self._functions.changed(ref.name)

    def forget(self, name: str, qualifier: str) -> None:
        """Drop a deleted version's or alias's configuration from memory (the store deleted
        it with the version or alias)."""
        self._configs.pop((name, qualifier), None)

    def forget_function(self, name: str) -> None:
        for key in [k for k in self._configs if k[0] == name]:
            del self._configs[key]

    # -- targets -------------------------------------------------------------------

    def check_dead_letter(self, owner: str, arn: str) -> None:
        """A DeadLetterConfig.TargetArn of function `owner` (its shape already checked) must
        name something Lamina can send a failed event to: InvalidParameterValueException
        saying why if not."""
        self._check_target(owner, arn, dead_letter=True)

    def _check_target(self, owner: str, arn: str, *, dead_letter: bool) -> None:
        here = f"arn:aws:lambda:{self._settings.region}:{self._settings.account_id}:function:NAME"
        if dead_letter:
            prefix = "Invalid dead letter queue ARN:"
            invalid = f"{prefix} {arn}. Lamina takes a Lambda function ARN ({here})."
        else:
            prefix = f"The destination ARN {arn} is invalid:"
            invalid = f"The destination ARN {arn} is invalid."  # Lambda's wording
        m = _ARN.fullmatch(arn)
        if m is None:
            raise InvalidParameterValueError(invalid)
        service = m["service"]
        # A dead-letter queue is an SQS queue or an SNS topic on Lambda; a destination may
        # also be an EventBridge bus or an S3 bucket.
        if service in _NOT_YET and (not dead_letter or service in ("sqs", "sns")):
            kinds, product = _NOT_YET[service]
            if dead_letter:
                where, use = "in DeadLetterConfig", f"({here}) as the TargetArn"
            else:
                where, use = "as destinations", f"({here})"
            raise InvalidParameterValueError(
                f"Lamina does not support {kinds} {where} yet: it has no {product}. Use a "
                f"Lambda function ARN {use} instead of {arn}."
            )
        target = _FUNCTION.fullmatch(m["resource"])
        if service != "lambda" or m["partition"] != "aws" or target is None:
            raise InvalidParameterValueError(invalid)
        if m["region"] != self._settings.region:
            if dead_letter:
                # Lambda's wording for a queue or topic of another region.
                raise InvalidParameterValueError(
                    f"{prefix} The resource specified by the TargetArn must be in the same "
                    "region as the Lambda function it's associated with."
                )
            raise InvalidParameterValueError(
                f"{prefix} it names a function of region {m['region'] or '(none)'}, and this "
                f"Lamina serves region {self._settings.region}."
            )
        if m["account"] != self._settings.account_id:
            raise InvalidParameterValueError(
                f"{prefix} it names a function of account {m['account'] or '(none)'}, and this "
                f"Lamina serves account {self._settings.account_id}."
            )
        name, qualifier = target["name"], target["qualifier"]
        if name == owner:
            if dead_letter:
                raise InvalidParameterValueError(
                    f"{prefix} a function cannot be its own dead-letter queue."
                )
            # Lambda's rule and wording.
            raise InvalidParameterValueError(
                "You can't specify the function as a destination for itself."
            )
        if self._functions.latest(name) is None:
            raise InvalidParameterValueError(f"{prefix} function {name} does not exist.")
        if qualifier is not None and not self._exists(name, qualifier):
            raise InvalidParameterValueError(
                f"{prefix} function {name} has no version or alias {qualifier}."
            )

    # -- internals -----------------------------------------------------------------

    async def _write(
        self, ref: FunctionRef, retries: Any, event_age: Any, destinations: Any, *, merge: bool
    ) -> EventInvokeConfig:
        c = v.Constraints()
        changes: dict[str, Any] = {}
        if retries is not None:
            changes["maximum_retry_attempts"] = c.integer(
                retries,
                "maximumRetryAttempts",
                limits.ASYNC_RETRIES_MIN,
                limits.ASYNC_RETRIES_MAX,
            )
        if event_age is not None:
            changes["maximum_event_age_s"] = c.integer(
                event_age,
                "maximumEventAgeInSeconds",
                limits.ASYNC_EVENT_AGE_MIN_S,
                limits.ASYNC_EVENT_AGE_MAX_S,
            )
        changes.update(_destinations(c, destinations))
        c.check()
        if not changes:
            raise InvalidParameterValueError(
                "You must specify at least one of error handling or destination setting."
            )
        qualifier = self._resolve(ref)
        for key in ("on_success", "on_failure"):
            if changes.get(key):
                self._check_target(ref.name, changes[key], dead_letter=False)
        async with self._writing:
            current = self._configs.get((ref.name, qualifier))
            if merge and current is None:
                raise self._no_config(ref.name, qualifier)
            base: dict[str, Any] = {
                "maximum_retry_attempts": None,
                "maximum_event_age_s": None,
                "on_success": None,
                "on_failure": None,
            }
            if merge and current is not None:
                base = {key: getattr(current, key) for key in base}
            config = EventInvokeConfig(
                function_name=ref.name,
                qualifier=qualifier,
                last_modified=_now(),
                **{**base, **changes},
            )
            stored = await self._functions.run(self._metadata.put_event_invoke, config)
            # The store checked that the function, version or alias still exists; if it was
            # deleted while this write waited, its deletion took the row with it.
            if not stored or not self._exists(ref.name, qualifier):
                raise self._function_not_found(ref.name, qualifier)
            self._configs[(ref.name, qualifier)] = config
        await self._functions.changed(ref.name)
        return config

    def _resolve(self, ref: FunctionRef) -> str:
        """The qualifier `ref` names (`$LATEST` when none), which must exist."""
        self._functions.require(ref.name)
        qualifier = ref.qualifier or LATEST
        if not self._exists(ref.name, qualifier):
            raise self._function_not_found(ref.name, qualifier)
        return qualifier

    def _exists(self, name: str, qualifier: str) -> bool:
        if self._functions.latest(name) is None:
            return False
        if qualifier == LATEST:
            return True
        if is_alias_name(qualifier):
            try:
                self._functions.aliases.get(name, qualifier)
            except ResourceNotFoundError:
                return False
            return True
        return self._functions.version(name, qualifier) is not None

    def _function_not_found(self, name: str, qualifier: str) -> ResourceNotFoundError:
        return ResourceNotFoundError(f"Function not found: {self._functions.arn(name, qualifier)}")

    def _no_config(self, name: str, qualifier: str) -> ResourceNotFoundError:
        # Lambda's wording (with the qualified ARN, `$LATEST` included).
        arn = self._functions.arn(name, qualifier)
        return ResourceNotFoundError(f"The function {arn} doesn't have an EventInvokeConfig")


def _destinations(c: v.Constraints, value: Any) -> dict[str, str | None]:
    """The DestinationConfig members given, by domain name: the destination ARN, or None for
    a member without one (`{}` or an empty Destination)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.fail(value, "destinationConfig", "Member must be a structure")
        return {}
    found: dict[str, str | None] = {}
    for member, key, where in _MEMBERS:
        entry = value.get(member)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            c.fail(entry, where, "Member must be a structure")
            continue
        arn = c.string(
            entry.get("Destination"),
            f"{where}.destination",
            max_len=_DESTINATION_MAX_CHARS,
            pattern=_DESTINATION,
        )
        found[key] = arn or None
    return found
