"""A create or configuration update as the caller sent it (`FunctionInput`), and the rules
that turn it into configuration fields: which members set what, checked by `validation`, and
which fields make one version's content differ from another's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.control import images, snapstart
from lamina.control import validation as v
from lamina.control.tags import check_tags
from lamina.models import FunctionConfig


@dataclass
class FunctionInput:
    """A create or a configuration update, as the caller sent it (values not yet checked).

    `None` means "not given". `unsupported` names features the caller asked for that Lamina
    does not have yet.
    """

    name: Any = None
    runtime: Any = None
    role: Any = None
    handler: Any = None
    description: Any = None
    timeout: Any = None
    memory_size: Any = None
    environment: Any = None
    ephemeral_storage: Any = None
    architectures: Any = None
    package_type: Any = None
    tags: Any = None
    layers: Any = None
    dead_letter_config: Any = None
    logging_config: Any = None
    kms_key_arn: Any = None
    vpc_config: Any = None
    tracing_config: Any = None
    durable_config: Any = None
    image_config: Any = None
    snap_start: Any = None
    #: `Code.ImageUri` (a container-image function's image), as sent
    image_uri: Any = None
    zip_file: bytes | None = None
    #: the `Code` members naming an S3 location (S3Bucket, S3Key, S3ObjectVersion), as sent
    s3_code: dict[str, Any] | None = None
    revision_id: Any = None
    unsupported: list[str] = field(default_factory=list)


#: what makes a version differ from another (not its description, revision or timestamps)
CONTENT_FIELDS = (
    "runtime",
    "handler",
    "role",
    "code_sha256",
    "timeout",
    "memory_size",
    "ephemeral_storage",
    "environment",
    "architectures",
    "package_type",
    "layers",
    "dead_letter_target",
    "logging",
    "kms_key_arn",
    "vpc",
    "tracing_mode",
    "durable",
    "image",
    "snap_start",
)


def same_content(a: FunctionConfig, b: FunctionConfig) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in CONTENT_FIELDS)


def configuration(c: v.Constraints, req: FunctionInput, *, creating: bool) -> dict[str, Any]:
    """The configuration fields `req` sets, checked; fields it leaves out are not returned."""
    fields = {
        "role": v.role(c, req.role, required=creating),
        "runtime": v.runtime(c, req.runtime),
        "handler": v.handler(c, req.handler, required=False),
        "description": v.description(c, req.description),
        "timeout": None if req.timeout is None else v.timeout(c, req.timeout),
        "memory_size": None if req.memory_size is None else v.memory_size(c, req.memory_size),
        "ephemeral_storage": (
            None if req.ephemeral_storage is None else v.ephemeral_storage(c, req.ephemeral_storage)
        ),
        "environment": v.environment(c, req.environment),
        # "" (kept past the filter below) removes the dead-letter queue
        "dead_letter_target": v.dead_letter_config(c, req.dead_letter_config),
        # the members given, merged with the function's own ones by the caller
        "logging": v.logging_config(c, req.logging_config),
        # "" (kept past the filter below) goes back to no key, as on Lambda
        "kms_key_arn": v.kms_key_arn(c, req.kms_key_arn),
        # its VpcId is filled in by `control.vpc` (which knows the server's VPCs)
        "vpc": v.vpc_config(c, req.vpc_config),
        "tracing_mode": v.tracing_mode(c, req.tracing_config),
        "durable": v.durable_config(c, req.durable_config),
        # ImageConfig as given (the image function's `FunctionImage.overrides`)
        "image_overrides": images.image_overrides(c, req.image_config),
        # SnapStart.ApplyOn (its combinations are checked on the whole configuration)
        "snap_start": snapstart.apply_on(c, req.snap_start),
    }
    if fields["environment"] is not None:
        fields["environment_given"] = True
    return {k: value for k, value in fields.items() if value is not None}


def checked_tags(c: v.Constraints, value: Any) -> dict[str, str] | None:
    """CreateFunction's `Tags` (limits: `tags.check_tag_limits`, once the rest is valid)."""
    return check_tags(c, value)
