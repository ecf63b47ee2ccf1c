"""Logs, metrics and metering."""

from lamina.observability.metrics import Metrics

__all__ = ["Metrics"]
