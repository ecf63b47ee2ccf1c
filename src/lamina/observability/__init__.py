"""Logs, metrics and metering."""

from lamina.observability.log_store import LogEvent, LogGroup, LogStore, LogStream
from lamina.observability.logs import EnvironmentLog, LogWriter, Report
from lamina.observability.metering import Meter, Usage
from lamina.observability.metrics import Metrics

__all__ = [
    "EnvironmentLog",
    "LogEvent",
    "LogGroup",
    "LogStore",
    "LogStream",
    "LogWriter",
    "Meter",
    "Metrics",
    "Report",
    "Usage",
]
