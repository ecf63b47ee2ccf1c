"""`GET /lamina/images`: the container images of this node (Lamina's own endpoint, read by
`lamina images`): each image a function uses, whether it is unpacked here, and the pulls in
flight or recently ended, with their progress."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.images import PullProgress


def _pull_json(p: PullProgress) -> dict[str, Any]:
    return {
        "State": p.phase,
        "LayersDone": p.layers_done,
        "LayersTotal": p.layers_total,
        "BytesDone": p.bytes_done,
        "BytesTotal": p.bytes_total,
        "Error": p.error,
    }


async def list_images(request: Request) -> Response:
    images = app_state(request).functions.images
    functions = app_state(request).functions.all_configs()
    # The last pull of each digest (the list is oldest first).
    pulls = {p.digest: p for p in images.progress()}
    used: dict[str, dict[str, Any]] = {}
    for config in functions:
        for image in (config.image, config.previous_image):
            if image is None:
                continue
            entry = used.setdefault(
                image.digest, {"Uri": image.uri, "Digest": image.digest, "Functions": []}
            )
            label = (
                config.name if config.version == "$LATEST" else f"{config.name}:{config.version}"
            )
            if label not in entry["Functions"]:
                entry["Functions"].append(label)
    for digest, latest in pulls.items():
        used.setdefault(digest, {"Uri": latest.uri, "Digest": digest, "Functions": []})
    out = []
    for digest, entry in sorted(used.items(), key=lambda kv: kv[1]["Uri"]):
        pull = pulls.get(digest)
        unpacked = images.unpacked(digest)
        item = dict(entry)
        if pull is not None:
            item.update(_pull_json(pull))
        else:
            item.update({"State": "ready" if unpacked else "absent", "Error": None})
        if unpacked is not None:
            item["State"] = "ready"
            item["Root"] = str(unpacked.rootfs)
        out.append(item)
    return json_response({"Images": out})
