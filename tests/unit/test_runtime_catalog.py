"""The runtime catalog: which of Lambda's runtimes Lamina offers, and what a host lacks."""

from __future__ import annotations

import pytest

from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError
from lamina.runtimes import catalog
from lamina.runtimes.catalog import (
    DEPRECATED_RUNTIMES,
    LAMBDA_RUNTIMES,
    NODE_RUNTIMES,
    PYTHON_RUNTIMES,
    RuntimeCatalog,
)


def test_the_current_lambda_runtimes_are_in_the_catalog() -> None:
    for name in ("python3.14", "nodejs22.x", "nodejs24.x"):
        assert name in PYTHON_RUNTIMES + NODE_RUNTIMES
    # Only runtimes Lambda knows and still accepts for new functions.
    for name in PYTHON_RUNTIMES + NODE_RUNTIMES:
        assert name in LAMBDA_RUNTIMES
        assert name not in DEPRECATED_RUNTIMES


def _host(
    monkeypatch: pytest.MonkeyPatch, pythons: dict[str, str], nodes: list[tuple[str, str]]
) -> RuntimeCatalog:
    """The catalog of a host with these interpreters (version -> path; (path, version))."""
    monkeypatch.setattr(catalog, "_find_python", pythons.get)
    monkeypatch.setattr(catalog, "_find_nodes", lambda: nodes)
    return RuntimeCatalog.discover()


def test_a_host_with_the_interpreters_offers_the_new_runtimes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = _host(
        monkeypatch,
        {"3.14": "/opt/py314/bin/python3.14"},
        [("/opt/node24/bin/node", "24.3.0"), ("/usr/bin/node", "22.1.0")],
    )
    python = found.get("python3.14")
    assert python is not None and python.executable == "/opt/py314/bin/python3.14"
    node24 = found.get("nodejs24.x")
    assert node24 is not None and node24.version == "24.3.0"
    assert found.get("nodejs22.x") is not None
    assert found.unavailable("python3.14") is None


def test_runtimes_the_host_lacks_are_named_with_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = _host(monkeypatch, {"3.11": "/usr/bin/python3.11"}, [("/usr/bin/node", "20.1.0")])
    missing = found.all_unavailable()
    assert set(missing) == (set(PYTHON_RUNTIMES) - {"python3.11"}) | (
        set(NODE_RUNTIMES) - {"nodejs20.x"}
    )
    assert missing["python3.14"].startswith("no python3.14 interpreter")
    assert missing["nodejs24.x"].startswith("no Node.js 24")
    # Every Python and Node.js runtime is either offered or said missing, never both.
    for name in PYTHON_RUNTIMES + NODE_RUNTIMES:
        assert (found.get(name) is None) == (name in missing)
    with pytest.raises(InvalidParameterValueError) as e:
        v.runtime_available("nodejs24.x", found)
    assert "nodejs24.x is not available on this Lamina host: no Node.js 24" in e.value.message


def test_a_node_release_lambda_does_not_offer_is_not_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = _host(monkeypatch, {}, [("/usr/bin/node", "23.0.0")])
    assert found.get("nodejs23.x") is None
    assert "nodejs23.x" not in found.all_unavailable()
