"""Durable state and its rules: functions (versions, aliases, layers and policies to come)."""

from lamina.control.functions import FunctionInput, FunctionService

__all__ = ["FunctionInput", "FunctionService"]
