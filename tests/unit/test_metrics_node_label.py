"""Cluster mode's `node` label on every sample of /metrics (a scrape of each node tells them
apart)."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from lamina.observability.metrics import Metrics, with_label


def test_every_sample_gets_the_label_and_keeps_its_own() -> None:
    text = b'# HELP x help\n# TYPE x counter\nx_total 1.0\ny{a="b c",d="e"} 2.0\nz{} 3.0\n'
    labelled = with_label(text, "node", "n-1").decode()
    samples = {
        s.name: s.labels
        for family in text_string_to_metric_families(labelled)
        for s in family.samples
    }
    assert samples["x_total"] == {"node": "n-1"}
    assert samples["y"] == {"node": "n-1", "a": "b c", "d": "e"}
    assert samples["z"] == {"node": "n-1"}


def test_a_node_renders_its_name_and_a_single_server_none() -> None:
    metrics = Metrics()
    Counter("probe", "a sample to render", ["fn"], registry=metrics.registry).labels("f").inc()
    plain = metrics.render().decode()
    assert 'node="' not in plain
    metrics.node = "alpha"
    labelled = metrics.render().decode()
    samples = [s for family in text_string_to_metric_families(labelled) for s in family.samples]
    assert samples and all(s.labels.get("node") == "alpha" for s in samples)
