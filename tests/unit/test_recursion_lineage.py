"""The trace header's Lineage: how a chain of invocations is counted per function."""

from __future__ import annotations

from lamina.control.recursion import continue_trace

ROOT = "Root=1-5759e988-bd862e3fe1be46a994272793"


def test_a_new_chain_starts_at_one() -> None:
    for header in (None, "", "Sampled=1", "garbage"):
        trace, count = continue_trace(header, "abcdef01")
        assert count == 1
        assert trace.startswith("Root=1-") and trace.endswith(";Lineage=abcdef01:1")


def test_the_function_entry_counts_up_and_others_are_kept() -> None:
    header = f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=0badc0de:3|abcdef01:7"
    trace, count = continue_trace(header, "abcdef01")
    assert count == 8
    assert trace == f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=0badc0de:3|abcdef01:8"
    trace, count = continue_trace(trace, "12345678")
    assert count == 1
    assert trace.endswith(";Lineage=0badc0de:3|abcdef01:8|12345678:1")


def test_botocore_quoting_and_bad_entries() -> None:
    # botocore URL-quotes `|`; malformed entries and unknown fields are dropped.
    header = f"{ROOT};Sampled=0;Self=x;Lineage=abcdef01:2%7Cnot-hex:4%7C0badc0de:x"
    trace, count = continue_trace(header, "abcdef01")
    assert count == 3
    assert trace == f"{ROOT};Sampled=0;Lineage=abcdef01:3"
