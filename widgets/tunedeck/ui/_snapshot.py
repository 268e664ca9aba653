"""Text and HTML snapshots of the widgets, for wherever the live view cannot run.

A notebook saved and reopened without its kernel, exported to HTML, or shown on a code host renders
these instead of the widget. Every value goes through ``html.escape``: prompts, generations, event
messages and paths are data, never markup.

Why a widget is displayed as *two* outputs (the live view, then its snapshot): JupyterLab and Notebook 7
draw one mime type per output, the highest ranked they can render, and the widget view
(``application/vnd.jupyter.widget-view+json``, rank 0) outranks ``text/html`` in every trusted output.
When the widget's model is missing (the notebook reopened, its kernel new or gone) jupyterlab_widgets
writes "Error displaying widget: model not found" and never falls back to the bundle's other types
(jupyter-widgets/ipywidgets#849, jupyterlab/jupyterlab#1139). So the snapshot travels in an output of
its own, and a style sheet inside it (``FALLBACK_CSS``, part of the saved notebook, so it works with no
kernel and no tunedeck front-end loaded) shows exactly one of the pair: the live view while it renders,
the snapshot when the view output holds no view (model not found, still loading, or closed). Exports
and code hosts have no widget renderer: they show the snapshot, and the view output is empty.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from IPython.display import display, update_display

from tunedeck.errors import TunedeckError

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATUS_COLORS = {
    "PENDING": "#6b7280", "QUEUED": "#6b7280", "STARTING": "#1d4ed8", "RUNNING": "#1d4ed8",
    "TERMINATING": "#b45309", "COMPLETED": "#15803d", "STOPPED": "#92400e", "FAILED": "#b91c1c",
    "UNKNOWN": "#6b7280",
}
TABLE_STYLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
CELL_STYLE = "text-align:left;padding:2px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def describe(exc: Exception) -> str:
    """An exception as one line for the user: tunedeck's own errors speak for themselves."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, TunedeckError) else f"{type(exc).__name__}: {text}"


def badge(status: str | None) -> str:
    status = status or "UNKNOWN"
    color = STATUS_COLORS.get(status, "#6b7280")
    return (f"<span style='background:{color};color:#fff;border-radius:3px;padding:1px 6px;"
            f"font-size:11px;font-weight:600'>{esc(status)}</span>")


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th style='{CELL_STYLE}'>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{CELL_STYLE}'>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{TABLE_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def short_time(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


#: Scoped to the pair of outputs one display makes; ``:has()`` needs Chromium 105, Safari 15.4, Firefox 121.
#: JupyterLab 4 and Notebook 7 share this markup (Notebook 7 is built from JupyterLab's parts): an output
#: is a ``.jp-OutputArea-child``; a mime renderer's node carries ``data-mime-type``, the widget renderer's
#: (a lumino Panel) does not: it holds the view's lumino widget once there is one, or only the text
#: "Error displaying widget[: model not found]" and the class ``jupyter-widgets``. (``:has()`` cannot nest,
#: so "no element inside" is not expressible; while a view loads, both its text and the snapshot show.)
_VIEW_OUTPUT = ".jp-OutputArea-output:not([data-mime-type])"
FALLBACK_CSS = (
    # a live view is drawn in the output before: hide the snapshot
    f".jp-OutputArea-child:has(> {_VIEW_OUTPUT} > .lm-Widget) + .jp-OutputArea-child:has(.tunedeck-fallback){{display:none}}"
    # the view failed (model not found): hide that output, the snapshot shows in its place
    f" .jp-OutputArea-child:has(> {_VIEW_OUTPUT}.jupyter-widgets):has(+ .jp-OutputArea-child .tunedeck-fallback){{display:none}}"
    " .tunedeck-fallback-note{font-size:11px;color:var(--jp-ui-font-color2,#6b7280);margin:2px 0 0}"
)


def fallback_html(snapshot_html: str, taken_at: datetime | None = None) -> str:
    """The snapshot as the output a reopened notebook shows: the style that pairs it with its live view,
    the snapshot itself and a line saying what it is."""
    taken = (taken_at or datetime.now(timezone.utc)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    note = (f"Snapshot of {esc(taken)}: the live view ended with its kernel. "
            "Run the cell again for a live one.")
    return (f"<div class='tunedeck-fallback'><style>{FALLBACK_CSS}</style>{snapshot_html}"
            f"<p class='tunedeck-fallback-note' data-testid='snapshot-note'>{note}</p></div>")


class SnapshotDisplay:
    """Mixin for a widget: display it as its live view plus a text/html + text/plain snapshot.

    Each snapshot output gets a display id, so ``_refresh_snapshot()`` can replace it with the last
    known state (the live view is left alone: it follows its model by itself).
    """

    _display_ids: list[str]

    def _snapshot_html(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _snapshot_text(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _view_bundle(self) -> dict[str, Any] | None:
        """The live view's output, or None once the widget is closed (no model to show)."""
        model_id = getattr(self, "model_id", None)
        if model_id and getattr(self, "comm", None) is not None:
            return {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": model_id}}
        return None

    def _snapshot_bundle(self) -> dict[str, Any]:
        return {"text/plain": self._snapshot_text(), "text/html": fallback_html(self._snapshot_html())}

    def _mimebundle(self) -> dict[str, Any]:
        """Everything in one bundle, for callers of ``_repr_mimebundle_`` (a display shows two outputs)."""
        return {**self._snapshot_bundle(), **(self._view_bundle() or {})}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # IPython takes a dict or a (data, metadata) tuple
        return self._mimebundle()

    def _ipython_display_(self) -> None:
        if not hasattr(self, "_display_ids"):
            self._display_ids = []
        view = self._view_bundle()
        if view is not None:
            display(view, raw=True)
        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(self._snapshot_bundle(), raw=True, display_id=display_id)

    def _refresh_snapshot(self) -> None:
        if not getattr(self, "_display_ids", None):
            return
        bundle = self._snapshot_bundle()
        for display_id in self._display_ids:
            try:
                update_display(bundle, raw=True, display_id=display_id)
            except Exception:  # noqa: BLE001 - no shell (plain Python): nothing to update
                pass
