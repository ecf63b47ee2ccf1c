"""A schedule's tick is claimed once on PostgreSQL, as on SQLite, when several nodes' stores ask
for it at the same moment: the claim's conditional UPDATE is a compare-and-set under READ
COMMITTED (the second UPDATE waits for the first and re-checks its condition on the row the
first wrote)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from lamina.models import Rule, RuleState
from lamina.store.engine import open_database
from lamina.store.rules import RuleStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROUNDS = 100
CLAIMERS = 4  # two per node


def test_concurrent_claims_of_each_tick_succeed_once(database_url: str) -> None:
    nodes = [RuleStore(open_database(database_url, cluster=True)) for _ in range(2)]
    nodes[0].put(
        Rule("every", "default", RuleState.ENABLED, T0, T0, schedule_expression="rate(1 minute)")
    )
    won: Counter[int] = Counter()
    counting = threading.Lock()
    together = threading.Barrier(CLAIMERS, timeout=30)
    failures: list[BaseException] = []

    def claimer(store: RuleStore) -> None:
        try:
            for minute in range(1, ROUNDS + 1):
                together.wait()  # every claimer asks for this tick at once
                if store.claim_tick("every", T0 + timedelta(minutes=minute)):
                    with counting:
                        won[minute] += 1
        except BaseException as e:
            failures.append(e)
            together.abort()

    threads = [threading.Thread(target=claimer, args=(nodes[i % 2],)) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert won == Counter(range(1, ROUNDS + 1))  # each tick won exactly once
    (rule,) = nodes[1].all()
    assert rule.last_tick == T0 + timedelta(minutes=ROUNDS)
    # an earlier tick, asked late (a node whose clock lags), is refused too
    assert not nodes[1].claim_tick("every", T0 + timedelta(minutes=ROUNDS - 1))
    for store in nodes:
        store.close()
