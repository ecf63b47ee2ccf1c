"""Caps on function versions' execution environments beyond Lambda's concurrency: a version's
MaxExecutionEnvironments (PutFunctionScalingConfig) and a capacity provider's MaxVCpuCount,
shared by the versions attached to it.

A Lamina environment runs one invocation at a time, so environments in use are invocations
running. Counting happens on the event loop only; `hold()` releases on every path. With no cap
set anywhere, `hold()` costs one dict lookup (the warm-invoke hot path).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lamina.errors import TooManyRequestsError

#: the Reason of a 429 from these caps (Lamina's own: Lambda names no reason for them)
MAX_ENVIRONMENTS_EXCEEDED = "FunctionMaxExecutionEnvironmentsExceeded"
PROVIDER_VCPUS_EXCEEDED = "CapacityProviderMaxVCpuCountExceeded"


class EnvironmentLimits:
    def __init__(self) -> None:
        #: (function, version) -> (max environments or None, provider or None, vCPUs each)
        self._versions: dict[tuple[str, str], tuple[int | None, str | None, float]] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._provider_max: dict[str, float] = {}
        self._provider_used: dict[str, float] = {}

    def set_version(
        self,
        name: str,
        version: str,
        max_environments: int | None,
        provider: str | None,
        vcpus: float,
    ) -> None:
        """A version's cap and provider (both None: no limits of these kinds)."""
        if max_environments is None and provider is None:
            self._versions.pop((name, version), None)
        else:
            self._versions[(name, version)] = (max_environments, provider, vcpus)

    def forget(self, name: str, version: str | None = None) -> None:
        for key in [k for k in self._versions if k[0] == name]:
            if version is None or key[1] == version:
                del self._versions[key]

    def set_provider(self, provider: str, max_vcpus: float | None) -> None:
        if max_vcpus is None:
            self._provider_max.pop(provider, None)
        else:
            self._provider_max[provider] = max_vcpus

    def applies(self, name: str, version: str) -> bool:
        """Whether the version has a cap of its own or a provider's (no cap: no counting)."""
        return (name, version) in self._versions

    def running(self, name: str, version: str) -> int:
        return self._running.get((name, version), 0)

    def provider_vcpus(self, provider: str) -> float:
        """vCPUs of the provider's environments in use now."""
        return self._provider_used.get(provider, 0.0)

    @contextmanager
    def hold(self, name: str, version: str) -> Iterator[None]:
        """One environment of the version in use for the block; TooManyRequestsError (429)
        if that would pass the version's or its provider's cap."""
        limits = self._versions.get((name, version))
        if limits is None:
            yield
            return
        high, provider, vcpus = limits
        key = (name, version)
        running = self._running.get(key, 0)
        if high is not None and running >= high:
            raise TooManyRequestsError("Rate Exceeded.", Reason=MAX_ENVIRONMENTS_EXCEEDED)
        if provider is not None:
            used = self._provider_used.get(provider, 0.0)
            cap = self._provider_max.get(provider)
            if cap is not None and used + vcpus > cap + 1e-9:
                raise TooManyRequestsError("Rate Exceeded.", Reason=PROVIDER_VCPUS_EXCEEDED)
            self._provider_used[provider] = used + vcpus
        self._running[key] = running + 1
        try:
            yield
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]
            if provider is not None:
                self._provider_used[provider] = max(0.0, self._provider_used[provider] - vcpus)
