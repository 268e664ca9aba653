"""A background poll loop that never outlives the widget it serves.

The thread holds only a weak reference to its owner, so a widget that is dropped without ``close()``
still ends its thread on the next tick; ``stop()`` (called from the widget's ``close()``) ends it at
once. The owner's ``_poll()`` returns False when there is nothing more to wait for (a finished run).
Errors are handed to the owner's ``_poll_failed()`` and retried with a growing pause, so a service
restart shows as a message rather than a dead widget.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

MAX_BACKOFF = 10.0


class Pollable(Protocol):
    def _poll(self) -> bool: ...

    def _poll_failed(self, exc: Exception) -> None: ...


class Poller:
    def __init__(self, owner: Pollable, interval: float, name: str):
        self.interval = interval
        self._owner = weakref.ref(owner)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            owner = self._owner()
            if owner is None:
                return
            try:
                keep_going = owner._poll()
                pause = self.interval
            except Exception as exc:  # noqa: BLE001 - any failure becomes a message in the widget
                keep_going = True
                pause = min(MAX_BACKOFF, pause * 2)
                try:
                    owner._poll_failed(exc)
                except Exception:  # noqa: BLE001
                    pass
            del owner  # hold no strong reference while sleeping
            if not keep_going:
                return
