"""`GET /lamina/nodes`: the nodes of the cluster, their health and load (Lamina's own endpoint,
read by `lamina nodes`). A single-machine server lists itself alone."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import AppState, app_state
from lamina.api.wire import json_response
from lamina.cluster.api import NodeInfo, NodeLoad
from lamina.scheduler.environment import EnvState


def local_load(state: AppState) -> NodeLoad:
    """This node's load, as its heartbeat reports it."""
    scheduler = state.scheduler
    envs = scheduler.environments()
    return NodeLoad(
        environments=len(envs),
        busy=sum(1 for env in envs if env.state is EnvState.BUSY),
        memory_used_mb=scheduler.capacity.used_mb,
        memory_capacity_mb=scheduler.capacity.capacity_mb,
        idle=scheduler.idle_by_version(),
        provisioned=scheduler.provisioned_by_version(),
    )


def _node_json(node: NodeInfo, now: float, self_name: str) -> dict[str, Any]:
    load = node.load
    return {
        "Name": node.name,
        "Self": node.name == self_name,
        "Endpoint": node.endpoint,
        "Healthy": node.healthy,
        "Problems": list(node.problems),
        "StartedAt": node.started_at,
        "HeartbeatAgeSeconds": round(max(0.0, now - node.heartbeat_at), 3),
        "Environments": load.environments,
        "Busy": load.busy,
        "MemoryUsedMB": load.memory_used_mb,
        "MemoryCapacityMB": load.memory_capacity_mb,
    }


async def list_nodes(request: Request) -> Response:
    state = app_state(request)
    now = time.time()
    if state.directory is None:
        settings = state.settings
        nodes = [
            NodeInfo(
                name=state.node_name,
                endpoint=settings.endpoint_url,
                started_at=state.started_at,
                heartbeat_at=now,
                load=local_load(state),
                problems=tuple(state.problems()),
            )
        ]
        cluster = False
    else:
        nodes = state.directory.live()
        cluster = True
    return json_response(
        {
            "Cluster": cluster,
            "Self": state.node_name,
            "Nodes": [_node_json(n, now, state.node_name) for n in nodes],
        }
    )
