"""Fixtures for the system tests: each module gets a `lamina serve` of its own on the real
namespace backend (they run as root in CI), and a neighbour function beside the attacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import Functions, Server
from tests.system._harness import Neighbour, functions_on, running_server

from lamina.runtimes.images import SdkState


@pytest.fixture(scope="session", autouse=True)
def _runtime_sdks(runtime_images: dict[str, SdkState]) -> dict[str, SdkState]:
    """The bundled SDKs in place before any system test's server starts (as for the
    integration tests' servers): no cold start here waits for a download."""
    return runtime_images


@pytest.fixture(scope="module")
def ns_server() -> Iterator[Server]:
    with running_server("namespace") as server:
        yield server


@pytest.fixture(scope="module")
def ns_lam(ns_server: Server) -> Any:
    return ns_server.client()


@pytest.fixture(scope="module")
def ns_functions(ns_server: Server) -> Iterator[Functions]:
    with functions_on(ns_server) as functions:
        yield functions


@pytest.fixture(scope="module")
def neighbour(ns_server: Server, ns_functions: Functions) -> Neighbour:
    n = Neighbour(ns_server, ns_functions)
    n.check()
    return n
