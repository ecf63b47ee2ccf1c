"""Every Lambda quota Lamina enforces, with Lambda's value, in one place.

Values come from AWS's "Lambda quotas" page; each name says its unit.
"""

from typing import Final

# Invocation payloads.
SYNC_PAYLOAD_MAX_BYTES: Final = 6 * 1024 * 1024  # request and response, RequestResponse
ASYNC_PAYLOAD_MAX_BYTES: Final = 256 * 1024

# Response streaming (AWS Lambda Developer Guide, "Response streaming for Lambda functions"):
# a streamed response may be up to 200 MB (raised from 20 MB in July 2025); its first 6 MB go
# uncapped, the rest at most 2 MBps ("Bandwidth limits for response streaming").
STREAM_RESPONSE_MAX_BYTES: Final = 200 * 1024 * 1024
STREAM_UNCAPPED_BYTES: Final = 6 * 1024 * 1024
STREAM_CAPPED_BYTES_PER_S: Final = 2 * 1024 * 1024

# Function configuration.
TIMEOUT_MIN_S: Final = 1
TIMEOUT_MAX_S: Final = 900
TIMEOUT_DEFAULT_S: Final = 3
MEMORY_MIN_MB: Final = 128
MEMORY_MAX_MB: Final = 10_240
MEMORY_DEFAULT_MB: Final = 128
EPHEMERAL_MIN_MB: Final = 512
EPHEMERAL_MAX_MB: Final = 10_240
EPHEMERAL_DEFAULT_MB: Final = 512
ENVIRONMENT_MAX_BYTES: Final = 4 * 1024
DESCRIPTION_MAX_CHARS: Final = 256
HANDLER_MAX_CHARS: Final = 128
FUNCTION_NAME_MAX_CHARS: Final = 64
LAYERS_MAX: Final = 5
#: tags per resource (function, code signing config, event source mapping)
TAGS_MAX: Final = 50
TAG_KEY_MAX_CHARS: Final = 128
TAG_VALUE_MAX_CHARS: Final = 256
TAIL_LOG_MAX_BYTES: Final = 4 * 1024

# Deployment packages.
ZIP_UPLOAD_MAX_BYTES: Final = 50 * 1024 * 1024  # zipped, direct upload
# The request carries the zip base64-encoded, so the request limit is 4/3 of it.
CREATE_REQUEST_MAX_BYTES: Final = 69_905_067
UNZIPPED_MAX_BYTES: Final = 250 * 1024 * 1024  # code plus layers, unzipped
# A zip read from S3 is not held to the direct-upload limit, only to the unzipped one: a zip
# weighs at least its stored contents (less its headers), so a bigger object is read no further.
S3_ZIP_MAX_BYTES: Final = UNZIPPED_MAX_BYTES
# A container image (`PackageType: Image`): 10 GB uncompressed, all layers. Lamina holds both
# the layers its manifest declares and the files they unpack to to it.
IMAGE_MAX_BYTES: Final = 10 * 1024 * 1024 * 1024

# Execution environment.
INIT_TIMEOUT_S: Final = 10.0  # the init phase of an on-demand environment
#: SnapStart: the restore phase of a restored environment (its after-restore hooks included)
RESTORE_TIMEOUT_S: Final = 10.0
#: SnapStart: the init phase of a version's template, made when it is published (Lambda
#: gives a SnapStart function's init up to 15 minutes)
SNAPSHOT_INIT_TIMEOUT_S: Final = 900.0

# Listing.
#: reservations never take the unreserved pool below this (or below the whole account limit,
#: if that is smaller)
UNRESERVED_CONCURRENCY_MIN: Final = 100
#: the account's code storage quota (75 GB), as GetAccountSettings reports it
TOTAL_CODE_SIZE_MAX_BYTES: Final = 80_530_636_800

LIST_MAX_ITEMS_DEFAULT: Final = 50
LIST_MAX_ITEMS_MAX: Final = 10_000

# Asynchronous invocation (PutFunctionEventInvokeConfig's ranges and defaults).
ASYNC_RETRIES_MIN: Final = 0
ASYNC_RETRIES_MAX: Final = 2
ASYNC_RETRIES_DEFAULT: Final = 2
ASYNC_EVENT_AGE_MIN_S: Final = 60
ASYNC_EVENT_AGE_MAX_S: Final = 21_600
ASYNC_EVENT_AGE_DEFAULT_S: Final = 21_600

# JSON from callers (Lamina's own limit; Lambda documents none). Deeper documents are refused
# as malformed: parsing and re-encoding recurse once per level, and Python's stack is finite.
JSON_MAX_DEPTH: Final = 500
#: Lambda's quota on a resource-based policy: a function's (per function, version or alias)
#: and a layer version's
RESOURCE_POLICY_MAX_BYTES = 20 * 1024

# API Gateway WebSocket APIs: "Quotas for configuring and running a WebSocket in API Gateway"
# (docs.aws.amazon.com/apigateway/latest/developerguide/
# apigateway-execution-service-websocket-limits-table.html, as of December 2026). A larger
# message (or frame) closes the connection with code 1009, as API Gateway does.
WEBSOCKET_FRAME_MAX_BYTES: Final = 32 * 1024
WEBSOCKET_MESSAGE_MAX_BYTES: Final = 128 * 1024
#: a connection with no message either way for this long is closed
WEBSOCKET_IDLE_TIMEOUT_S: Final = 10 * 60
#: a connection is closed this long after it opened, however busy
WEBSOCKET_MAX_DURATION_S: Final = 2 * 60 * 60
#: an integration (the function) that has not answered by then fails the message
WEBSOCKET_INTEGRATION_TIMEOUT_S: Final = 29
WEBSOCKET_ROUTES_PER_API_MAX: Final = 300
WEBSOCKET_INTEGRATIONS_PER_API_MAX: Final = 300
WEBSOCKET_STAGES_PER_API_MAX: Final = 10
#: Lamina's own bound (API Gateway documents none): messages of one connection whose function
#: has not answered yet; past it the connection's next frames wait to be read (backpressure),
#: so one client cannot make the server hold an unbounded number of invocations
WEBSOCKET_IN_FLIGHT_PER_CONNECTION_MAX: Final = 100
