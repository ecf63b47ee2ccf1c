"""The data plane: pools of execution environments and the invocations they run."""

from lamina.scheduler.environment import EnvState, InitFailed
from lamina.scheduler.scheduler import Scheduler

__all__ = ["EnvState", "InitFailed", "Scheduler"]
