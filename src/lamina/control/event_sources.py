"""Event-source mappings: Create/Get/Update/Delete/List, their states, and what the mapping
runner needs of them (`events.sources.api.MappingControl`, which this service implements).

States move as Lambda's: a create is `Creating` (or `Disabled` at once with `Enabled: false`,
since no poller starts), an update `Updating` (`Enabling`/`Disabling` when `Enabled` flips;
a disabled mapping that is not enabled stays `Disabled`), a delete `Deleting`. The runner
settles them (`settle`: to `Enabled` once its poller runs, to `Disabled` once it stopped;
`remove` once a deleting mapping's poller stopped). With no runner subscribed, a delete
forgets the mapping at once: nothing would ever call `remove`.

`LastProcessingResult` starts as "No records processed"; `report` sets it in memory at once
and a background task writes the changed ones every `RESULT_FLUSH_S` seconds in one
transaction (a write per batch would cost more than the batch).

Mappings are deleted with their function, and with the version or alias they name. With
authentication on, the function's execution role must allow the source's read actions
(`mappings.ROLE_ACTIONS`), checked at create and update and by the runner (`role_problem`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid as uuids
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from lamina import filter_criteria
from lamina.arns import FunctionRef
from lamina.auth import policy
from lamina.auth.principal import AccessRequest, Decision
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes, mapping_rules
from lamina.control import validation as v
from lamina.control.aliases import is_alias_name
from lamina.control.brokers import BrokerService
from lamina.control.mapping_input import ARN, MappingRequest, check_shapes
from lamina.control.tags import check_tag_limits
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceInUseError,
    ResourceNotFoundError,
)
from lamina.mappings import (
    RESULT_NONE,
    ROLE_ACTIONS,
    Connection,
    EventSourceMapping,
    MappingState,
    SourceArn,
    SourceKind,
    parse_source_arn,
)
from lamina.models import LATEST, FunctionConfig
from lamina.settings import Settings
from lamina.store.event_sources import EventSourceStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between writes of the results `report` set
RESULT_FLUSH_S = 2.0
#: Lambda's StateTransitionReason for a user's change (Kinesis-style streams say "User action")
USER_INITIATED = "USER_INITIATED"
STREAM_USER_ACTION = "User action"
_SERVICE_NAMES = {
    SourceKind.SQS: "SQS",
    SourceKind.RABBITMQ: "MQ",
    SourceKind.NATS: "NATS",
    SourceKind.REDIS: "Redis",
}
_ARN_FORMS = (
    "arn:aws:sqs:<region>:<account>:<queue> (an SQS queue at --sqs-endpoint), "
    "arn:aws:mq:<region>:<account>:broker:<name>:b-<id> (a RabbitMQ broker), or "
    "arn:aws:nats|redis:<region>:<account>:broker:<name>:stream/<stream> (a NATS or Redis "
    "stream); see `lamina brokers list`"
)


class Functions(Protocol):
    """What the service needs of the functions (`control.FunctionService`)."""

    def ref(
        self, value: str, qualifier: str | None = None, *, namespaced: bool = False
    ) -> FunctionRef: ...

    def arn(self, name: str, qualifier: str | None = None) -> str: ...

    def latest(self, name: str) -> FunctionConfig | None: ...

    def version(self, name: str, version: str) -> FunctionConfig | None: ...

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundError: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...


class Roles(Protocol):
    def policies_for(self, role_arn: str | None) -> tuple[Any, ...]: ...


class AliasVersions(Protocol):
    """An alias's version, for the role check (None: no such alias)."""

    def __call__(self, function_name: str, alias: str) -> str | None: ...


class QueueVisibility(Protocol):
    """The visibility timeout (seconds) of the SQS queue an ARN names, read at the server's
    SQS endpoint; None if it cannot be read now (the mapping then reports why once it runs).
    Given by the server (control does not talk to brokers itself)."""

    async def __call__(self, source_arn: str) -> int | None: ...


def mapping_arn(region: str, account: str, uuid: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}"


def not_found(uuid: str) -> ResourceNotFoundError:
    del uuid  # Lambda's message does not name it
    return ResourceNotFoundError("The resource you requested does not exist.")


class EventSourceService:
    """The mappings, in memory (the runner reads them on every change) and in the store."""

    def __init__(
        self,
        settings: Settings,
        store: EventSourceStore,
        functions: Functions,
        brokers: BrokerService,
        roles: Roles | None = None,
        alias_version: AliasVersions | None = None,
        *,
        queue_visibility: QueueVisibility | None = None,
    ) -> None:
        self._settings = settings
        self._queue_visibility = queue_visibility
        self._store = store
        self._functions = functions
        self._brokers = brokers
        self._roles = roles
        self._alias_version = alias_version or (lambda name, alias: None)
        self._mappings: dict[str, EventSourceMapping] = {}
        self._callbacks: list[Callable[[str], None]] = []
        self._writing = asyncio.Lock()
        self._unsaved: dict[str, str] = {}  # results `report` set, not yet written
        self._flusher: asyncio.Task[None] | None = None
        brokers.users = self.users_of
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    # -- lifecycle -----------------------------------------------------------------

    async def load(self) -> None:
        for m in await self._functions.run(self._store.all_mappings):
            self._mappings[m.uuid] = m

    async def refresh(self, uuid: str) -> None:
        """Another node changed the mapping `uuid` ("*": any mapping): re-read it, and tell
        the runner if it is not what was held (its last result aside: each node reports its
        own pollers')."""
        async with self._writing:
            fresh = {m.uuid: m for m in await self._functions.run(self._store.all_mappings)}
            uuids = fresh.keys() | self._mappings.keys() if uuid == "*" else {uuid}
            changed = []
            for key in sorted(uuids):
                held, mapping = self._mappings.get(key), fresh.get(key)
                if held is not None and mapping is not None:
                    mapping = replace(mapping, last_result=held.last_result)
                if held == mapping:
                    continue
                if mapping is None:
                    del self._mappings[key]
                    self._unsaved.pop(key, None)
                else:
                    self._mappings[key] = mapping
                changed.append(key)
        for key in changed:
            self._notify(key)

    def start(self) -> None:
        """Start writing reported results in the background."""
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        """Stop the writer and write what is left."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self._flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(RESULT_FLUSH_S)
            try:
                await self._flush()
            except Exception:  # a full disk, say: kept in memory, tried again next time
                log.exception("event-source mappings: could not write processing results")

    async def _flush(self) -> None:
        if not self._unsaved:
            return
        pending, self._unsaved = self._unsaved, {}
        try:
            await self._functions.run(self._store.set_results, pending)
        except BaseException:
            self._unsaved = {**pending, **self._unsaved}
            raise

    # -- reads (MappingControl) ------------------------------------------------------

    def mappings(self) -> list[EventSourceMapping]:
        return list(self._mappings.values())

    def get(self, uuid: str) -> EventSourceMapping | None:
        found = self._mappings.get(uuid)
        return None if found is None else self._with_role(found)

    def _with_role(self, mapping: EventSourceMapping) -> EventSourceMapping:
        """A stream mapping as the runner gets it: with the function's execution role, its
        records' `invokeIdentityArn` (a role changed since restarts the poller)."""
        if not mapping.kind.is_stream:
            return mapping
        config = self._config(mapping.function_name, mapping.qualifier)
        role = config.role if config is not None else None
        return mapping if role == mapping.role_arn else replace(mapping, role_arn=role)

    def require(self, uuid: Any) -> EventSourceMapping:
        """GetEventSourceMapping: ResourceNotFoundException for a UUID that names none."""
        found = self._mappings.get(uuid) if isinstance(uuid, str) else None
        if found is None:
            raise not_found(str(uuid))
        return found

    def arn(self, uuid: str) -> str:
        return mapping_arn(self._settings.region, self._settings.account_id, uuid)

    def users_of(self, arn: str) -> list[str]:
        """UUIDs of the mappings reading from broker `arn` or logging in with secret `arn`."""
        return sorted(
            m.uuid
            for m in self._mappings.values()
            if m.source_arn == arn
            or m.source_arn.startswith(arn + ":stream/")
            or any(a.uri == arn for a in m.access)
        )

    def list(
        self,
        source_arn: Any = None,
        function_name: Any = None,
        marker: Any = None,
        max_items: int = 100,
    ) -> tuple[list[EventSourceMapping], str | None]:
        """ListEventSourceMappings: by source and/or function (a name lists every mapping of
        the function; a qualified name or ARN, those of that version or alias), by UUID, one
        page after `marker` (the last UUID of the previous page)."""
        c = v.Constraints()
        c.string(source_arn, "eventSourceArn", max_len=10_000, pattern=ARN)
        c.check()
        found = sorted(self._mappings.values(), key=lambda m: m.uuid)
        if source_arn is not None:
            found = [m for m in found if m.source_arn == source_arn]
        if function_name is not None:
            ref = self._functions.ref(function_name, namespaced=True)
            found = [
                m
                for m in found
                if m.function_name == ref.name
                and (ref.qualifier is None or m.qualifier == ref.qualifier)
            ]
        if isinstance(marker, str) and marker:
            found = [m for m in found if m.uuid > marker]
        page = found[:max_items]
        more = len(found) > max_items
        return page, (page[-1].uuid if more and page else None)

    # -- writes ----------------------------------------------------------------------

    async def create(self, req: MappingRequest) -> EventSourceMapping:
        self._refuse_unsupported(req)
        checked = check_shapes(req, create=True)
        if checked.source_arn is None:
            raise InvalidParameterValueError("Unrecognized event source.")
        source = self._source(checked.source_arn)
        assert checked.function_name is not None
        ref, function_arn = self._function(checked.function_name)
        settings = mapping_rules.apply(source.kind, checked.source_arn, checked, None)
        self._check_access(settings.access)
        filters = settings.filters
        filter_criteria.compile_filters(filters)
        tags = checked.tags or {}
        check_tag_limits(tags)
        enabled = checked.enabled is not False
        await self._check_visibility(source.kind, checked.source_arn, ref.name, ref.qualifier)
        async with self._writing:
            self._refuse_duplicate(source.kind, checked.source_arn, function_arn, settings.queues)
            now = time.time()
            mapping = EventSourceMapping(
                uuid=str(uuids.uuid4()),
                function_arn=function_arn,
                function_name=ref.name,
                qualifier=ref.qualifier,
                source_arn=checked.source_arn,
                kind=source.kind,
                state=MappingState.CREATING if enabled else MappingState.DISABLED,
                state_reason=_reason(source.kind),
                last_modified=now,
                last_result=RESULT_NONE,
                tags=tags,
                **settings.fields(),
            )
            self._check_role(mapping)
            await self._save(mapping)
        return mapping

    async def update(self, uuid: Any, req: MappingRequest) -> EventSourceMapping:
        self._refuse_unsupported(req)
        checked = check_shapes(req, create=False)
        if checked.source_arn is not None:
            raise InvalidParameterValueError(
                "EventSourceArn cannot be updated: delete the mapping and create another."
            )
        current = self.require(uuid)
        settings = mapping_rules.apply(current.kind, current.source_arn, checked, current)
        self._check_access(settings.access)
        filter_criteria.compile_filters(settings.filters)
        if checked.function_name is not None:
            target = self._functions.ref(checked.function_name, namespaced=True)
            function_name, function_qualifier = target.name, target.qualifier
        else:
            function_name, function_qualifier = current.function_name, current.qualifier
        await self._check_visibility(
            current.kind, current.source_arn, function_name, function_qualifier
        )
        async with self._writing:
            current = self.require(uuid)
            if current.state is MappingState.DELETING:
                raise ResourceInUseError(
                    f"Cannot update the event source mapping {current.uuid} because it is "
                    "being deleted."
                )
            name, qualifier, function_arn = (
                current.function_name,
                current.qualifier,
                current.function_arn,
            )
            if checked.function_name is not None:
                ref, function_arn = self._function(checked.function_name)
                name, qualifier = ref.name, ref.qualifier
                if function_arn != current.function_arn:
                    self._refuse_duplicate(
                        current.kind, current.source_arn, function_arn, settings.queues
                    )
            mapping = replace(
                current,
                function_arn=function_arn,
                function_name=name,
                qualifier=qualifier,
                state=_updated_state(current.state, checked.enabled),
                state_reason=_reason(current.kind),
                last_modified=time.time(),
                **settings.fields(),
            )
            self._check_role(mapping)
            await self._save(mapping)
        return mapping

    async def delete(self, uuid: Any) -> EventSourceMapping:
        """DeleteEventSourceMapping: the mapping moves to Deleting (answered so); the runner
        removes it once its poller stopped."""
        async with self._writing:
            current = self.require(uuid)
            if current.state is MappingState.DELETING:
                return current
            mapping = replace(current, state=MappingState.DELETING, last_modified=time.time())
            await self._delete(mapping)
        return mapping

    async def _delete(self, mapping: EventSourceMapping) -> None:
        """(under `_writing`) Move to DELETING, or forget at once with no runner."""
        if not self._callbacks:
            await self._functions.run(self._store.delete_mapping, mapping.uuid)
            self._mappings.pop(mapping.uuid, None)
            self._unsaved.pop(mapping.uuid, None)
            await changes.tell(self.feed, "mapping", mapping.uuid)
            return
        await self._save(mapping)

    async def _save(self, mapping: EventSourceMapping) -> None:
        await self._functions.run(self._store.put_mapping, mapping)
        self._mappings[mapping.uuid] = mapping
        self._notify(mapping.uuid)
        await changes.tell(self.feed, "mapping", mapping.uuid)

    # -- the runner's moves (MappingControl) -----------------------------------------

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def _notify(self, uuid: str) -> None:
        for callback in self._callbacks:
            try:
                callback(uuid)
            except Exception:
                log.exception("event-source mapping listener failed for %s", uuid)

    async def settle(self, uuid: str, state: MappingState) -> None:
        async with self._writing:
            current = self._mappings.get(uuid)
            if current is None:
                return
            moves = {
                MappingState.ENABLED: (
                    MappingState.CREATING,
                    MappingState.ENABLING,
                    MappingState.UPDATING,
                ),
                MappingState.DISABLED: (MappingState.DISABLING,),
            }
            if current.state not in moves.get(state, ()):
                return
            settled = replace(current, state=state)
            await self._functions.run(self._store.put_mapping, settled)
            self._mappings[uuid] = settled
        await changes.tell(self.feed, "mapping", uuid)

    async def remove(self, uuid: str) -> None:
        async with self._writing:
            current = self._mappings.get(uuid)
            if current is None or current.state is not MappingState.DELETING:
                return
            await self._functions.run(self._store.delete_mapping, uuid)
            del self._mappings[uuid]
            self._unsaved.pop(uuid, None)
        self._notify(uuid)
        await changes.tell(self.feed, "mapping", uuid)

    def report(self, uuid: str, result: str) -> None:
        current = self._mappings.get(uuid)
        if current is None or current.last_result == result:
            return
        self._mappings[uuid] = replace(current, last_result=result)
        self._unsaved[uuid] = result

    def connection(self, mapping: EventSourceMapping) -> Connection:
        source = parse_source_arn(mapping.source_arn)
        if source is None:
            raise LookupError(f"{mapping.source_arn} is not an event source ARN Lamina knows")
        if source.kind is SourceKind.SQS:
            endpoint = self._settings.sqs_endpoint
            if endpoint is None:
                raise LookupError(
                    "Lamina has no SQS endpoint to poll: start it with --sqs-endpoint URL"
                )
            return Connection(SourceKind.SQS, endpoint, queue_name=source.name)
        stored = self._brokers.by_arn(mapping.source_arn)
        if stored is None:
            raise LookupError(
                f"broker {source.broker} ({mapping.source_arn.split(':stream/')[0]}) is not "
                "registered (see `lamina brokers list`)"
            )
        url = stored.url
        vhost: str | None = None
        for entry in mapping.access:
            if entry.type == "BASIC_AUTH":
                secret = self._brokers.secret_by_arn(entry.uri)
                if secret is None:
                    raise LookupError(f"the BASIC_AUTH secret {entry.uri} does not exist")
                url = _with_credentials(url, secret.username, secret.password)
            elif entry.type == "VIRTUAL_HOST":
                vhost = entry.uri
        if source.kind is SourceKind.RABBITMQ:
            if vhost is None:
                vhost = unquote(urlsplit(url).path[1:]) or "/"
            else:
                url = _with_path(url, "/" + quote(vhost, safe=""))
            return Connection(source.kind, url, virtual_host=vhost)
        return Connection(source.kind, url, stream=source.name)

    def role_problem(self, mapping: EventSourceMapping) -> str | None:
        """Why the function's role may not read the source (only with authentication on)."""
        if not self._settings.auth or self._roles is None:
            return None
        config = self._config(mapping.function_name, mapping.qualifier)
        if config is None:
            return None
        documents = self._roles.policies_for(config.role)
        try:
            # The runner asks before each (re)connection: parse each document once.
            parsed = [_parsed(json.dumps(d, sort_keys=True)) for d in documents]
        except policy.PolicyError as e:
            return f"The execution role's policy cannot be read: {e}"
        caller = policy.Caller(role_arn=config.role, account=self._settings.account_id)
        for action in ROLE_ACTIONS[mapping.kind]:
            request = AccessRequest(action, mapping.source_arn)
            if policy.evaluate(parsed, request, caller) is not Decision.ALLOW:
                operation = action.split(":", 1)[1]
                return (
                    f"The provided execution role does not have permissions to call "
                    f"{operation} on {_SERVICE_NAMES[mapping.kind]}"
                )
        return None

    # -- the functions' changes ------------------------------------------------------

    async def function_changed(self, name: str, version: str | None) -> None:
        """`FunctionService.subscribe`'s listener: a deleted function (`version` None) or
        published version takes its mappings with it."""
        if version is None:
            await self._delete_where(lambda m: m.function_name == name)
        elif self._functions.version(name, version) is None:
            await self._delete_where(lambda m: m.function_name == name and m.qualifier == version)

    async def alias_deleted(self, function_name: str, alias: str) -> None:
        await self._delete_where(
            lambda m: m.function_name == function_name and m.qualifier == alias
        )

    async def _delete_where(self, which: Callable[[EventSourceMapping], bool]) -> None:
        async with self._writing:
            for m in [m for m in self._mappings.values() if which(m)]:
                if m.state is not MappingState.DELETING:
                    await self._delete(
                        replace(m, state=MappingState.DELETING, last_modified=time.time())
                    )

    # -- tags (`TagHolder` for `event-source-mapping` ARNs) ---------------------------

    async def read_tags(self, uuid: str) -> dict[str, str] | None:
        found = self._mappings.get(uuid)
        return dict(found.tags) if found is not None else None

    async def write_tags(self, uuid: str, tags: dict[str, str]) -> bool:
        async with self._writing:
            current = self._mappings.get(uuid)
            if current is None:
                return False
            tagged = replace(current, tags=dict(tags))
            await self._functions.run(self._store.put_mapping, tagged)
            self._mappings[uuid] = tagged
        await changes.tell(self.feed, "mapping", uuid)
        return True

    # -- rules -----------------------------------------------------------------------

    def _refuse_unsupported(self, req: MappingRequest) -> None:
        if req.unsupported:
            raise InvalidParameterValueError(
                f"Lamina does not support {', '.join(sorted(req.unsupported))} for event-source "
                "mappings."
            )

    def _source(self, arn: str) -> SourceArn:
        source = parse_source_arn(arn)
        if source is None:
            raise InvalidParameterValueError(
                f"Unrecognized event source {arn}: Lamina reads from {_ARN_FORMS}."
            )
        if source.kind is SourceKind.SQS:
            if self._settings.sqs_endpoint is None:
                raise InvalidParameterValueError(
                    "Lamina has no SQS endpoint to poll SQS queues at: start it with "
                    "--sqs-endpoint URL (see docs/event-sources.md)."
                )
            return source
        if self._brokers.by_arn(arn) is None:
            raise InvalidParameterValueError(
                f"The broker {source.broker} of {arn} is not registered with Lamina (see "
                "`lamina brokers list`; `lamina brokers add NAME URL` registers one)."
            )
        return source

    def _function(self, value: str) -> tuple[FunctionRef, str]:
        """The function (version, alias) a FunctionName names, and the ARN the mapping
        invokes: qualified when it was named with a qualifier."""
        ref = self._functions.ref(value, namespaced=True)
        if self._config(ref.name, ref.qualifier) is None:
            raise self._functions.not_found(ref.name, ref.qualifier)
        return ref, self._functions.arn(ref.name, ref.qualifier)

    def _config(self, name: str, qualifier: str | None) -> FunctionConfig | None:
        if qualifier is None or qualifier == LATEST:
            return self._functions.latest(name)
        if is_alias_name(qualifier):
            version = self._alias_version(name, qualifier)
            return None if version is None else self._functions.version(name, version)
        return self._functions.version(name, qualifier)

    def _check_access(self, access: tuple[Any, ...]) -> None:
        for entry in access:
            if entry.type == "BASIC_AUTH" and self._brokers.secret_by_arn(entry.uri) is None:
                raise InvalidParameterValueError(
                    f"The BASIC_AUTH secret {entry.uri} does not exist (see `lamina secrets "
                    "list`; `lamina secrets put` makes one)."
                )

    def _refuse_duplicate(
        self, kind: SourceKind, source_arn: str, function_arn: str, queues: tuple[str, ...]
    ) -> None:
        for m in self._mappings.values():
            if m.source_arn != source_arn or m.function_arn != function_arn:
                continue
            if kind is SourceKind.RABBITMQ and m.queues != queues:
                continue  # another queue of the same broker
            name = function_arn.split(":function:", 1)[1].split(":", 1)[0]
            if kind is SourceKind.SQS:
                text = (
                    f'An event source mapping with SQS arn (" {source_arn} ") and function '
                    f'(" {name} ") already exists. Please update or delete the existing mapping '
                    f"with UUID {m.uuid}"
                )
            else:
                text = (
                    f'The event source arn (" {source_arn} ") and function (" {name} ") '
                    "provided mapping already exists. Please update or delete the existing "
                    f"mapping with UUID {m.uuid}"
                )
            raise ResourceConflictError(text)

    async def _check_visibility(
        self, kind: SourceKind, source_arn: str, name: str, qualifier: str | None
    ) -> None:
        """Lambda refuses an SQS mapping whose function may run longer than the queue's
        visibility timeout (a message would reappear while still being processed). A queue
        that cannot be read now is let through: the mapping reports the problem."""
        if kind is not SourceKind.SQS or self._queue_visibility is None:
            return
        config = self._config(name, qualifier)
        if config is None:
            return
        visibility = await self._queue_visibility(source_arn)
        if visibility is not None and config.timeout > visibility:
            raise InvalidParameterValueError(
                f"Queue visibility timeout: {visibility} seconds is less than Function "
                f"timeout: {config.timeout} seconds"
            )

    def _check_role(self, mapping: EventSourceMapping) -> None:
        problem = self.role_problem(mapping)
        if problem is not None:
            raise InvalidParameterValueError(problem)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> policy.Policy:
    return policy.parse(text)


def _reason(kind: SourceKind) -> str:
    return STREAM_USER_ACTION if kind.is_stream else USER_INITIATED


def _updated_state(state: MappingState, enabled: bool | None) -> MappingState:
    """The state an update moves a mapping to (see the module docstring)."""
    if enabled is False:
        return MappingState.DISABLED if state is MappingState.DISABLED else MappingState.DISABLING
    if state in (MappingState.DISABLED, MappingState.DISABLING):
        return MappingState.ENABLING if enabled else state
    if state is MappingState.CREATING:
        return state  # its poller has not started yet: it starts with the new settings
    return MappingState.UPDATING


def _with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
