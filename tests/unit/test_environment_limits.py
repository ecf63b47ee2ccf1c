"""EnvironmentLimits: a version's MaxExecutionEnvironments and a provider's MaxVCpuCount."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from lamina.errors import TooManyRequestsError
from lamina.scheduler.limits import (
    MAX_ENVIRONMENTS_EXCEEDED,
    PROVIDER_VCPUS_EXCEEDED,
    EnvironmentLimits,
)


def test_without_limits_anything_runs() -> None:
    limits = EnvironmentLimits()
    with ExitStack() as stack:
        for _ in range(100):
            stack.enter_context(limits.hold("f", "1"))
    assert limits.running("f", "1") == 0


def test_a_versions_maximum_and_release_on_every_path() -> None:
    limits = EnvironmentLimits()
    limits.set_version("f", "1", 2, None, 1.0)
    with limits.hold("f", "1"), limits.hold("f", "1"):
        with pytest.raises(TooManyRequestsError) as e, limits.hold("f", "1"):
            pass
        assert e.value.fields["Reason"] == MAX_ENVIRONMENTS_EXCEEDED
        with limits.hold("f", "2"):  # another version is not capped
            pass
    with pytest.raises(ValueError), limits.hold("f", "1"):
        raise ValueError
    assert limits.running("f", "1") == 0
    limits.set_version("f", "1", None, None, 1.0)
    with limits.hold("f", "1"), limits.hold("f", "1"), limits.hold("f", "1"):
        pass


def test_a_providers_vcpus_are_shared() -> None:
    limits = EnvironmentLimits()
    limits.set_provider("p", 2.0)
    limits.set_version("a", "1", None, "p", 0.5)
    limits.set_version("b", "$LATEST", None, "p", 1.0)
    with limits.hold("a", "1"), limits.hold("a", "1"), limits.hold("b", "$LATEST"):
        assert limits.provider_vcpus("p") == 2.0
        with pytest.raises(TooManyRequestsError) as e, limits.hold("a", "1"):
            pass
        assert e.value.fields["Reason"] == PROVIDER_VCPUS_EXCEEDED
    assert limits.provider_vcpus("p") == 0.0
    limits.set_provider("p", None)
    with limits.hold("b", "$LATEST"), limits.hold("b", "$LATEST"), limits.hold("b", "$LATEST"):
        pass
