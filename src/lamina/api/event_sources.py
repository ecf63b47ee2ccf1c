"""Lambda REST API (2015-03-31): the event-source mapping operations, and Lamina's own
`/lamina/sources` (the mappings with the runner's counters, for `lamina sources`).
Parse, call control/, serialise (EventSourceMappingConfiguration, botocore's shape)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param
from lamina.control import validation as v
from lamina.control.event_sources import EventSourceService
from lamina.control.mapping_input import MappingRequest
from lamina.errors import ServiceError
from lamina.mappings import EventSourceMapping, SourceKind

# Request members and their MappingRequest names (Create takes them all; Update all but the
# source and starting position, as the model has it).
_MEMBERS = {
    "FunctionName": "function_name",
    "EventSourceArn": "source_arn",
    "Enabled": "enabled",
    "BatchSize": "batch_size",
    "MaximumBatchingWindowInSeconds": "batching_window",
    "FilterCriteria": "filter_criteria",
    "ScalingConfig": "scaling_config",
    "DestinationConfig": "destination_config",
    "StartingPosition": "starting_position",
    "StartingPositionTimestamp": "starting_timestamp",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "MaximumRecordAgeInSeconds": "maximum_record_age",
    "BisectBatchOnFunctionError": "bisect",
    "ParallelizationFactor": "parallelization_factor",
    "TumblingWindowInSeconds": "tumbling_window",
    "Queues": "queues",
    "SourceAccessConfigurations": "access",
    "FunctionResponseTypes": "response_types",
    "Tags": "tags",
}
_RESPONSE_TYPES = ["ReportBatchItemFailures"]
_CREATE_ONLY = frozenset(
    {"EventSourceArn", "StartingPosition", "StartingPositionTimestamp", "Queues", "Tags"}
)


def _service(request: Request) -> EventSourceService:
    service = app_state(request).event_sources
    if service is None:  # only a server built without them (some unit tests)
        raise ServiceError("This server has no event-source mappings.")
    return service


def _request(body: dict[str, Any], *, create: bool) -> MappingRequest:
    req = MappingRequest()
    for key, value in body.items():
        name = _MEMBERS.get(key)
        if name is not None and (create or key not in _CREATE_ONLY):
            setattr(req, name, value)
        elif value not in (None, [], {}, False, ""):
            req.unsupported.append(key)
    return req


def mapping_json(service: EventSourceService, m: EventSourceMapping) -> dict[str, Any]:
    """EventSourceMappingConfiguration, with the members Lambda answers for the kind."""
    out: dict[str, Any] = {
        "UUID": m.uuid,
        "BatchSize": m.batch_size,
        "EventSourceArn": m.source_arn,
        "FunctionArn": m.function_arn,
        "LastModified": round(m.last_modified, 3),
        "LastProcessingResult": m.last_result,
        "State": m.state.value,
        "StateTransitionReason": m.state_reason,
        "FunctionResponseTypes": _RESPONSE_TYPES if m.report_batch_item_failures else [],
        "EventSourceMappingArn": service.arn(m.uuid),
    }
    # Amazon MQ's default window is 500 ms, which the whole seconds of this member cannot
    # say: Lambda leaves it out until one is set.
    if not (m.kind is SourceKind.RABBITMQ and m.batching_window_default):
        out["MaximumBatchingWindowInSeconds"] = m.batching_window_s
    if m.filters:
        out["FilterCriteria"] = {"Filters": [{"Pattern": p} for p in m.filters]}
    if m.maximum_concurrency is not None:
        out["ScalingConfig"] = {"MaximumConcurrency": m.maximum_concurrency}
    if m.kind is SourceKind.RABBITMQ:
        out["Queues"] = list(m.queues)
        out["SourceAccessConfigurations"] = [{"Type": a.type, "URI": a.uri} for a in m.access]
    if m.kind.is_stream:
        out["StartingPosition"] = m.starting_position
        if m.starting_timestamp is not None:
            out["StartingPositionTimestamp"] = m.starting_timestamp
        out["ParallelizationFactor"] = m.parallelization_factor
        out["MaximumRetryAttempts"] = m.maximum_retry_attempts
        out["MaximumRecordAgeInSeconds"] = m.maximum_record_age_s
        out["BisectBatchOnFunctionError"] = m.bisect_on_error
        out["TumblingWindowInSeconds"] = m.tumbling_window_s
        out["DestinationConfig"] = {
            "OnFailure": {"Destination": m.on_failure} if m.on_failure else {}
        }
    return out


async def create_event_source_mapping(request: Request) -> Response:
    service = _service(request)
    mapping = await service.create(_request(await json_body(request), create=True))
    return json_response(mapping_json(service, mapping), status=202)


async def get_event_source_mapping(request: Request) -> Response:
    service = _service(request)
    return json_response(mapping_json(service, service.require(request.path_params["uuid"])))


async def update_event_source_mapping(request: Request) -> Response:
    service = _service(request)
    body = await json_body(request)
    mapping = await service.update(request.path_params["uuid"], _request(body, create=False))
    return json_response(mapping_json(service, mapping), status=202)


async def delete_event_source_mapping(request: Request) -> Response:
    service = _service(request)
    mapping = await service.delete(request.path_params["uuid"])
    return json_response(mapping_json(service, mapping), status=202)


async def list_event_source_mappings(request: Request) -> Response:
    service = _service(request)
    c = v.Constraints()
    max_items = v.max_items(c, max_items_param(request), 10_000)
    c.check()
    query = request.query_params
    found, marker = service.list(
        query.get("EventSourceArn"), query.get("FunctionName"), query.get("Marker"), max_items
    )
    out: dict[str, Any] = {"EventSourceMappings": [mapping_json(service, m) for m in found]}
    if marker is not None:
        out["NextMarker"] = marker
    return json_response(out)


async def list_sources(request: Request) -> Response:
    """`GET /lamina/sources`: every mapping with the runner's counters (`Stats`, absent
    while no poller reports on it)."""
    state = app_state(request)
    service = _service(request)
    listed = []
    for m in sorted(service.mappings(), key=lambda m: (m.function_name, m.uuid)):
        entry = mapping_json(service, m)
        entry["Kind"] = m.kind.value
        stats = state.source_stats(m.uuid)
        if stats is not None:
            entry["Stats"] = {
                "RecordsReceived": stats.records_received,
                "RecordsFiltered": stats.records_filtered,
                "Batches": stats.batches,
                "FunctionErrors": stats.function_errors,
                "RecordsToFailureDestination": stats.records_to_failure_destination,
                "Throttles": stats.throttles,
                "BacklogAgeSeconds": stats.backlog_age_s,
                "Lag": stats.lag,
                "Pollers": stats.pollers,
            }
        listed.append(entry)
    return json_response({"Sources": listed})
