"""Stacks: SAM / CloudFormation templates deployed onto Lamina (`lamina deploy --template`).

Three layers, as the rest of Lamina:

- `template`: reads a template (YAML with CloudFormation's short tags, or JSON), runs AWS's own
  SAM translator over it, checks `Parameters`, evaluates `Conditions`, and resolves intrinsic
  functions against what is already provisioned. Pure: no I/O beyond reading files.
- `provision` (and one module per resource family): creates, updates and deletes the resources
  Lamina runs through the server's own APIs, in dependency order, with rollback; remembers each
  stack on the server (`/lamina/stacks`).
- `lamina.cli.stacks`: the commands (`deploy --template`, `stacks`, `dev`).

The types below are the contract between those layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TemplateError(Exception):
    """A template Lamina cannot deploy: says what, and where (resource and line) when known."""

    def __init__(self, message: str, *, logical_id: str | None = None, line: int | None = None):
        self.message = message
        self.logical_id = logical_id
        self.line = line
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.logical_id:
            where.append(f"resource {self.logical_id}")
        if self.line:
            where.append(f"line {self.line}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


@dataclass
class Resource:
    """One resource of the CloudFormation template (after the SAM transform)."""

    logical_id: str
    type: str
    #: as written, intrinsic functions unresolved
    properties: dict[str, Any]
    #: logical ids this one needs first: DependsOn, and every Ref / Fn::GetAtt / Fn::Sub
    #: reference in its properties (resources only; parameters and pseudo parameters excluded)
    depends_on: set[str] = field(default_factory=set)
    #: 1-based line in the user's template where the resource (or, for a resource the SAM
    #: translator generated, the SAM resource it came from) is written; None if unknown
    line: int | None = None
    #: the SAM resource it was generated from (e.g. "HelloWorldFunction" for
    #: "HelloWorldFunctionRole"), else None
    source: str | None = None
    deletion_policy: str | None = None
    update_policy: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Template:
    """A template ready to provision: transformed, parameters bound, conditions applied
    (resources whose Condition is false are already left out)."""

    path: Path
    #: local paths (CodeUri, ContentUri, ...) are relative to this directory
    base_dir: Path
    resources: dict[str, Resource]
    #: parameter name -> value (defaults applied, overrides checked against the declaration)
    parameters: dict[str, Any]
    #: condition name -> its value
    conditions: dict[str, bool]
    mappings: dict[str, Any]
    #: output name -> {"Value": <unresolved>, "Description": str?, "Export": ...?}
    outputs: dict[str, Any]
    #: the template as the SAM translator left it (CloudFormation)
    transformed: dict[str, Any]
    #: for `lamina dev`: SAM function logical id -> its code directory (absolute), where the
    #: template's CodeUri is a local directory
    code_dirs: dict[str, Path] = field(default_factory=dict)
    #: pseudo parameter -> value (AWS::Region, AWS::AccountId, AWS::StackName, ...)
    pseudo: dict[str, Any] = field(default_factory=dict)


@dataclass
class Physical:
    """What a provisioned resource answers to: `Ref` and `Fn::GetAtt`."""

    ref: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeployedFunction:
    logical_id: str
    function_name: str
    #: the local code directory, when the template names one (zips and S3 code: None)
    code_dir: Path | None
    #: AutoPublishAlias, if any
    alias: str | None = None
    handler: str | None = None
    runtime: str | None = None


@dataclass
class DeployResult:
    stack: str
    functions: list[DeployedFunction]
    #: output name -> resolved value
    outputs: dict[str, Any]
