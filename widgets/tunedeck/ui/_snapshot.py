"""Text and HTML snapshots of the widgets, for wherever the live view cannot run.

A notebook saved and reopened without its kernel, exported to HTML, or shown on a code host renders
these instead of the widget. Every value goes through ``html.escape``: prompts, generations, event
messages and paths are data, never markup.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable
from datetime import datetime
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


class SnapshotDisplay:
    """Mixin for a widget: display it with a text/html + text/plain snapshot beside the live view.

    Each display gets a display id, so ``_refresh_snapshot()`` can replace the snapshot with the last
    known state (done once, when a run ends; it also re-renders the live view there).
    """

    _display_ids: list[str]

    def _snapshot_html(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _snapshot_text(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _mimebundle(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": self._snapshot_text(), "text/html": self._snapshot_html()}
        model_id = getattr(self, "model_id", None)
        if model_id and getattr(self, "comm", None) is not None:
            data[WIDGET_VIEW] = {"version_major": 2, "version_minor": 0, "model_id": model_id}
        return data

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # IPython takes a dict or a (data, metadata) tuple
        return self._mimebundle()

    def _ipython_display_(self) -> None:
        if not hasattr(self, "_display_ids"):
            self._display_ids = []
        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(self._mimebundle(), raw=True, display_id=display_id)

    def _refresh_snapshot(self) -> None:
        for display_id in getattr(self, "_display_ids", []):
            try:
                update_display(self._mimebundle(), raw=True, display_id=display_id)
            except Exception:  # noqa: BLE001 - no shell (plain Python): nothing to update
                pass
