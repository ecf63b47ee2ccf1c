"""The contract between the provisioning engine (`provision`) and the modules that know one
family of resource types (`functions`, `apis`, `events`, `iam`).

A `Kind` creates, updates and deletes the resources of one type through the server's public
APIs. `update` may raise `Replace` when the change cannot be made in place (CloudFormation's
"Replacement: Yes" properties, such as a function's name): the engine then creates a new one
and deletes the old one once the whole deploy succeeded.

A resource's record (what the stack remembers of it) is a JSON object: `type`,
`physical_ref`, `attributes` (what `Fn::GetAtt` answers), `properties` (resolved, as last
applied), `properties_digest`, `status` and `deletion_policy`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lamina.stacks import Physical, Template, TemplateError
from lamina.stacks.client import StackClient

#: the key S1's template layer puts in place of a local CodeUri/ContentUri
LOCAL_PATH = "LaminaLocalPath"
#: the key the engine adds beside it: a digest of the directory's or zip's contents, so that
#: an edit changes the resolved properties (and so the resource is updated)
LOCAL_DIGEST = "LaminaDigest"

Record = dict[str, Any]


class Replace(Exception):
    """The change needs a new resource: create one, delete the old one afterwards."""


class ResourceFailed(Exception):
    """A resource could not be provisioned: the reason, as the progress line shows it."""


@dataclass
class Context:
    client: StackClient
    stack: str
    region: str
    account: str
    #: None when deleting a stack (its template is not read again)
    template: Template | None
    echo: Callable[[str], None]
    warn: Callable[[str], None]
    #: logical id -> what it answers to, as provisioned so far
    physical: dict[str, Physical] = field(default_factory=dict)
    #: extra lines to print after the outputs (each route's local URL)
    notes: list[str] = field(default_factory=list)

    def name_for(self, logical_id: str, max_len: int = 64) -> str:
        return generated_name(self.stack, logical_id, max_len)


class Kind(Protocol):
    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical: ...

    def update(
        self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record
    ) -> Physical: ...

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None: ...


def generated_name(stack: str, logical_id: str, max_len: int = 64) -> str:
    """`<stack>-<LogicalId>`, as CloudFormation names what the template does not; cut to
    `max_len` with a hash of the whole in its place when it is longer."""
    name = f"{stack}-{logical_id}"
    if len(name) <= max_len:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: max_len - 11]}-{digest}"


def stable_id(stack: str, logical_id: str) -> str:
    """A 10-character id, the same on every deploy of the stack (API ids)."""
    return hashlib.sha256(f"{stack}/{logical_id}".encode()).hexdigest()[:10]


def tree_digest(path: Path) -> str:
    """sha256 of a directory's files (names and contents) or of a file."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path)
        if any(part in ("__pycache__", ".git", ".aws-sam") for part in rel.parts):
            continue
        if file.is_file():
            h.update(rel.as_posix().encode() + b"\0")
            h.update(file.read_bytes())
    return h.hexdigest()


def zip_local(path: Path, logical_id: str) -> str:
    """A directory zipped, or a zip file as it is; base64, as CreateFunction's ZipFile."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise TemplateError(
                f"{path} is neither a directory nor a zip file", logical_id=logical_id
            )
        return base64.b64encode(path.read_bytes()).decode()
    if not path.is_dir():
        raise TemplateError(f"{path} does not exist", logical_id=logical_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path)
            if any(part in ("__pycache__", ".git", ".aws-sam") for part in rel.parts):
                continue
            if file.is_file():
                zf.write(file, rel.as_posix())
    return base64.b64encode(buf.getvalue()).decode()


def zip_inline(source: str, runtime: str | None) -> str:
    """CloudFormation's inline code (`Code.ZipFile`): one file, index.py or index.js by runtime."""
    name = "index.js" if (runtime or "").startswith("nodejs") else "index.py"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, source)
    return base64.b64encode(buf.getvalue()).decode()


def add_digests(value: Any) -> Any:
    """`value` with a `LaminaDigest` beside each `LaminaLocalPath` (see LOCAL_DIGEST)."""
    if isinstance(value, dict):
        out = {k: add_digests(v) for k, v in value.items()}
        local = value.get(LOCAL_PATH)
        if isinstance(local, str) and Path(local).exists():
            out[LOCAL_DIGEST] = tree_digest(Path(local))
        return out
    if isinstance(value, list):
        return [add_digests(v) for v in value]
    return value


def function_and_qualifier(name_or_arn: str) -> tuple[str, str | None]:
    """`name`, `name:qualifier`, or a function ARN with or without a qualifier."""
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        name = parts[6] if len(parts) > 6 else name_or_arn
        return name, parts[7] if len(parts) > 7 else None
    name, _, qualifier = name_or_arn.partition(":")
    return name, qualifier or None


def strip(props: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in keys}


def coerce(
    props: dict[str, Any], ints: tuple[str, ...] = (), bools: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`props` with the numbers and booleans a template wrote as strings made what the API
    takes (a `Number` parameter's `Ref` is a string; CloudFormation converts, so do we)."""
    out = dict(props)
    for key in ints:
        value = out.get(key)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    for key in bools:
        value = out.get(key)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
    return out
