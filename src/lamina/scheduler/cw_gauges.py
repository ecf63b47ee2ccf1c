"""CloudWatch's concurrency gauges, read from the pools and the concurrency leases (the
metric writer samples them every few seconds; users read their per-minute Maximum)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lamina.observability.cw_metrics import Dimensions
from lamina.scheduler.concurrency import ConcurrencyControl

if TYPE_CHECKING:
    from lamina.scheduler.scheduler import Pool

#: (metric, the dimension sets it counts in, value)
Gauge = tuple[str, tuple[Dimensions, ...], float]


def sample(
    pools: list[Pool], draining: Iterable[Pool], concurrency: ConcurrencyControl
) -> list[Gauge]:
    """ConcurrentExecutions (account-wide and by function), UnreservedConcurrentExecutions
    (account-wide), and ProvisionedConcurrentExecutions and ProvisionedConcurrencyUtilization
    of versions with provisioned concurrency ready (`FunctionName` + `Resource`)."""
    running = {
        pool.config.name: concurrency.running(pool.config.name) for pool in [*pools, *draining]
    }
    total = concurrency.running()
    # Functions with reserved concurrency, as this node's lease keeper knows them (the
    # single-node keeper; a keeper without that map counts every function as unreserved).
    reserved: dict[str, int] = getattr(concurrency, "_reserved", {})
    out: list[Gauge] = [
        ("ConcurrentExecutions", ((),), float(total)),
        (
            "UnreservedConcurrentExecutions",
            ((),),
            float(total - sum(n for f, n in running.items() if f in reserved)),
        ),
    ]
    for name, n in running.items():
        out.append(("ConcurrentExecutions", ((("FunctionName", name),),), float(n)))
    for pool in pools:
        ready = pool.provisioned_ready
        if pool.retired or not ready:
            continue
        name, version = pool.config.name, pool.config.version
        dims = ((("FunctionName", name), ("Resource", f"{name}:{version}")),)
        busy = pool.provisioned_busy
        out.append(("ProvisionedConcurrentExecutions", dims, float(busy)))
        out.append(("ProvisionedConcurrencyUtilization", dims, busy / ready))
    return out
