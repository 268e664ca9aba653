"""Who in this process wants to know that a run was deleted: its open monitors.

A monitor stops polling once its run has ended, so a run deleted afterwards (``fm.delete``, the runs
browser's Delete) would go on showing its last state as if nothing happened. Deleting through this
process tells every listener at once; a run deleted from another process is noticed the next time a
monitor asks the service about it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_listeners: list[Callable[[str], None]] = []
_lock = threading.Lock()


def on_run_deleted(listener: Callable[[str], None]) -> None:
    """Call ``listener(run_name)`` after each run deleted through this process."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def run_deleted(name: str) -> None:
    """Tell the listeners that run ``name`` is gone (a listener's failure stops no one else)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(name)
        except Exception:  # noqa: BLE001 - a broken listener must not fail the deletion
            pass
