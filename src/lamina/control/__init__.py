"""Durable state and its rules: functions (versions, aliases, layers and policies to come)."""

from lamina.control.function_input import FunctionInput
from lamina.control.functions import FunctionService

__all__ = ["FunctionInput", "FunctionService"]
