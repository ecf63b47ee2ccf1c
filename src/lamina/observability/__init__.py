"""Logs, metrics and metering."""

from lamina.observability.logs import EnvironmentLog, Report
from lamina.observability.metrics import Metrics

__all__ = ["EnvironmentLog", "Metrics", "Report"]
