"""Deployment packages named by an S3 location (`Code.S3Bucket/S3Key/S3ObjectVersion`,
a layer's `Content.S3*`): where to find them, and fetching them from the S3-API endpoint
Lamina is configured with (`--s3-endpoint`).

Lamina talks to the user's object store (MinIO, Ceph, AWS S3) through botocore, which is
already Lamina's dependency for SigV4, and takes its credentials from botocore's usual chain
(environment variables, `AWS_PROFILE` and the shared files, and so on). The fetch is blocking
network I/O, so it runs on this module's own worker threads, never on the event loop.

Lambda reads the object with the caller's own credentials; Lamina has only its own, so any
caller allowed to create functions or publish layers can deploy any object those reach
(docs/functions.md says so).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lamina import limits
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError

log = logging.getLogger(__name__)

_BUCKET = re.compile(r"[0-9A-Za-z\.\-_]*(?<!\.)")
#: the `Code`/`Content` members that name an S3 location
S3_MEMBERS = ("S3Bucket", "S3Key", "S3ObjectVersion")
#: how much of an object is read at a time (the size limit is checked as it arrives)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class S3Location:
    """One object: a bucket, a key and, optionally, one version of it."""

    bucket: str
    key: str
    version: str | None = None


def s3_location(members: dict[str, Any], where: str) -> S3Location | None:
    """The S3 location named by a `Code` or `Content` structure, None if it names none.

    `where` prefixes the members' names in validation messages ("code.", "content." or "").
    Raises ValidationException for values outside the model's constraints and
    InvalidParameterValueException for an incomplete location."""
    bucket = members.get("S3Bucket")
    key = members.get("S3Key")
    version = members.get("S3ObjectVersion")
    if bucket is None and key is None and version is None:
        return None
    c = v.Constraints()
    s3_constraints(c, members, where)
    c.check()
    if bucket is None or key is None:
        raise InvalidParameterValueError(
            "An S3 location needs both S3Bucket and S3Key (S3ObjectVersion is optional)."
        )
    return S3Location(bucket=bucket, key=key, version=version)


def s3_constraints(c: v.Constraints, members: Any, where: str) -> None:
    """Add the model's constraints on a location's members to `c` (so that they are reported
    with the request's other validation errors, as Lambda does)."""
    if not isinstance(members, dict):
        return
    _string(c, members.get("S3Bucket"), f"{where}s3Bucket", 3, 63, _BUCKET)
    _string(c, members.get("S3Key"), f"{where}s3Key", 1, 1024)
    _string(c, members.get("S3ObjectVersion"), f"{where}s3ObjectVersion", 1, 1024)


def _string(
    c: v.Constraints,
    value: Any,
    where: str,
    min_len: int,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
) -> None:
    if isinstance(value, str) and len(value) < min_len:
        c.fail(value, where, f"Member must have length greater than or equal to {min_len}")
        return
    c.string(value, where, max_len=max_len, pattern=pattern)


def _getobject_error(code: str, message: str) -> InvalidParameterValueError:
    # Lambda passes S3's own error code and message through in this one shape.
    return InvalidParameterValueError(
        f"Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}"
    )


class S3CodeFetcher:
    """Reads packages from the configured S3-API endpoint.

    `fetch` may be called concurrently; the botocore client is built on first use (building it
    reads botocore's JSON models: blocking, so on a worker) and shared, as botocore clients are
    thread-safe. `close` stops the workers.
    """

    def __init__(self, endpoint: str | None, region: str) -> None:
        self._endpoint = endpoint
        self._region = region
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lamina-s3")

    @property
    def configured(self) -> bool:
        return self._endpoint is not None

    async def fetch(self, location: S3Location) -> bytes:
        """The object's bytes, at most Lambda's unzipped package limit (a zip read from S3
        is not held to the 50 MB of a direct upload)."""
        if self._endpoint is None:
            raise InvalidParameterValueError(
                "Lamina has no S3 endpoint configured, so it cannot read code from "
                f"s3://{location.bucket}/{location.key}: start the server with "
                "`lamina serve --s3-endpoint URL`, or upload the package as ZipFile."
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._fetch, location)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _s3(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import botocore.session
                from botocore.config import Config

                session = botocore.session.get_session()
                self._client = session.create_client(
                    "s3",
                    endpoint_url=self._endpoint,
                    region_name=session.get_config_variable("region") or self._region,
                    # Path-style addressing: MinIO, Ceph and most self-hosted endpoints
                    # serve buckets under the path, not as subdomains.
                    config=Config(
                        s3={"addressing_style": "path"},
                        retries={"max_attempts": 2, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=60,
                    ),
                )
            return self._client

    def _fetch(self, location: S3Location) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        args: dict[str, str] = {"Bucket": location.bucket, "Key": location.key}
        if location.version is not None:
            args["VersionId"] = location.version
        try:
            response = self._s3().get_object(**args)
            size = response.get("ContentLength")
            if isinstance(size, int) and size > limits.S3_ZIP_MAX_BYTES:
                response["Body"].close()
                raise _too_large()
            body = response["Body"]
            chunks: list[bytes] = []
            total = 0
            try:
                while chunk := body.read(_CHUNK):
                    total += len(chunk)
                    if total > limits.S3_ZIP_MAX_BYTES:
                        raise _too_large()
                    chunks.append(chunk)
            finally:
                body.close()
            return b"".join(chunks)
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            message = str(error.get("Message") or "")
            if not message:
                # A HEAD-like answer without a body (403/404 without XML) has only a status.
                message = {"404": "Not Found", "403": "Forbidden"}.get(code, code)
            return_error = _getobject_error(code, message)
        except NoCredentialsError:
            return_error = InvalidParameterValueError(
                "Lamina found no credentials for its S3 endpoint: give the server some through "
                "the usual AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE)."
            )
        except BotoCoreError as e:
            log.warning("reading s3://%s/%s failed: %s", location.bucket, location.key, e)
            return_error = InvalidParameterValueError(
                f"Error occurred while GetObject. Lamina could not reach its S3 endpoint: {e}"
            )
        raise return_error


def _too_large() -> InvalidParameterValueError:
    # What Lambda answers for an S3 package over its limit: the unzipped limit's message.
    return InvalidParameterValueError(
        f"Unzipped size must be smaller than {limits.UNZIPPED_MAX_BYTES} bytes"
    )
