"""Logs, metrics and metering."""

from lamina.observability.logs import EnvironmentLog, LogWriter, Report
from lamina.observability.metrics import Metrics

__all__ = ["EnvironmentLog", "LogWriter", "Metrics", "Report"]
