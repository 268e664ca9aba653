"""Jupyter widgets for tunedeck: a form that calls ``create()``, a live run monitor, a runs browser.

    import tunedeck
    tunedeck.form(model="tiny-chat", register_to="main.demo")   # Start -> fm.create() + monitor
    tunedeck.monitor(run)                                       # or just display a TrainingRun
    tunedeck.runs()                                             # every run: open, cancel, delete
    tunedeck.compare(runs)                                      # several runs overlaid (a sweep's)

Each widget also carries a text/HTML snapshot, shown where the live view cannot run (a saved
notebook reopened without its kernel, an HTML export).
"""

from __future__ import annotations

from tunedeck.ui.compare import RunComparison, compare
from tunedeck.ui.form import TrainingForm, form
from tunedeck.ui.monitor import RunMonitor, monitor
from tunedeck.ui.runs_browser import RunsBrowser, runs

__all__ = ["RunComparison", "RunMonitor", "RunsBrowser", "TrainingForm", "compare", "form", "monitor", "runs"]
