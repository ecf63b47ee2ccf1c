"""Provisioned concurrency's placement in a cluster (`cluster.provisioned`): the owner node
tells its scheduler, and tells it again after each change, since the scheduler replaces a
version's pool when the version's configuration changes and a new pool keeps nothing until
it is told."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from lamina.cluster.api import NodeInfo
from lamina.cluster.hashing import owner
from lamina.cluster.provisioned import ProvisionedPlacement
from lamina.models import FunctionConfig
from lamina.scheduler import Scheduler

CONFIG = FunctionConfig(
    name="fn",
    version="1",
    runtime="python3.11",
    handler="app.handler",
    role="arn:aws:iam::000000000000:role/x",
    code_sha256="ab" * 32,
    code_size=1,
    revision_id="r1",
    last_modified=datetime.now(UTC),
)


@dataclass
class Recorder:
    told: list[tuple[str, int]] = field(default_factory=list)

    def provision(self, config: FunctionConfig, count: int) -> None:
        self.told.append((config.revision_id, count))

    def provisioned(self, config: FunctionConfig) -> tuple[int, str | None]:
        return 0, None


@dataclass
class Directory:
    self_name: str
    names: list[str]

    def live(self) -> list[NodeInfo]:
        return [NodeInfo(n, f"http://{n}", 0.0, 0.0) for n in self.names]


def placement(me: str, names: list[str]) -> tuple[ProvisionedPlacement, Recorder]:
    recorder = Recorder()
    directory: Any = Directory(me, names)
    return ProvisionedPlacement(cast(Scheduler, recorder), directory), recorder


NODES = ["a", "b", "c"]
OWNER = owner("fn:1", NODES) or "a"


def test_the_owner_tells_its_scheduler_again_after_a_change() -> None:
    p, recorder = placement(OWNER, NODES)
    p.on_change(CONFIG, 2)
    # the version's configuration was read again (another node's change): the scheduler's
    # pool for it is a new one, which must be told its count too
    p.on_change(replace(CONFIG, revision_id="r2"), 2)
    assert recorder.told == [("r1", 2), ("r2", 2)]
    p.on_change(replace(CONFIG, revision_id="r2"), 0)
    assert recorder.told[-1] == ("r2", 0)


def test_other_nodes_keep_none() -> None:
    other = next(n for n in NODES if n != OWNER)
    p, recorder = placement(other, NODES)
    p.on_change(CONFIG, 2)
    p.on_change(replace(CONFIG, revision_id="r2"), 2)
    assert recorder.told == []
