"""SnapStart runtime hooks, as Lambda's Python runtimes offer them (standard library only).

A function registers callables to run before its version's snapshot is taken and after
each environment is restored from it:

    from snapshot_restore_py import register_after_restore, register_before_snapshot

    @register_after_restore
    def fresh_token():
        ...

    register_before_snapshot(pool.close)            # or with arguments: f, *args, **kwargs

Before-snapshot hooks run in the reverse order of registration, after-restore hooks in the
order of registration. Both forms return the callable, so they work as decorators. Lamina's
bootstrap imports this module before the handler, so `import snapshot_restore_py` finds it
in every Python environment (it does nothing outside a SnapStart version, as on Lambda).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_before: list[Hook] = []
_after: list[Hook] = []


def register_before_snapshot(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args, **kwargs)` before the snapshot is taken; returns `func`."""
    _before.append((func, args, kwargs))
    return func


def register_after_restore(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args, **kwargs)` in each environment restored from the snapshot; returns
    `func`."""
    _after.append((func, args, kwargs))
    return func


def get_before_snapshot() -> list[Hook]:
    """The before-snapshot hooks in the order they run (the reverse of registration)."""
    return list(reversed(_before))


def get_after_restore() -> list[Hook]:
    """The after-restore hooks in the order they run (that of registration)."""
    return list(_after)
