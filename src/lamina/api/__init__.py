"""HTTP surfaces: the Lambda REST API, /health and /metrics. AWS spelling stops here."""

from lamina.api.app import build_app
from lamina.api.context import AppState

__all__ = ["AppState", "build_app"]
