"""Signals to a runtime's main thread.

A signal sent to a process goes to whichever of its threads the kernel picks, and it prefers
the main thread only if that thread can take it at that moment. Right after an environment is
thawed its main thread may still be on its way out of the freezer, so a SIGTERM sent with
kill() can land on another thread (an internal extension's, say). Python and Node.js run
signal handlers on the main thread only, and that thread sits in a blocking read of
`/invocation/next` that nothing else interrupts: the handler would not run before the
Shutdown phase ends. tgkill() queues the signal for the main thread itself, whose read is then
interrupted, as on Lambda.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)


def signal_main_thread(pid: int, sig: int) -> None:
    """Send `sig` to the main thread of process `pid` (OSError if it is gone)."""
    if _libc.tgkill(pid, pid, sig) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
