"""The comparison view: several runs' loss curves overlaid (one colour per run) and a table of what tells
them apart — learning rate, duration, LoRA rank — and how they did: status, final train and eval loss,
time taken, registered model version. The best run (lowest final eval loss, else train loss) is marked.

    runs = tunedeck.sweep([1e-4, 3e-4], ["1ep", "2ep"], model=..., train_data_path=..., register_to=...)
    tunedeck.compare(runs)

Each run is read by its own ``RunTracker`` (ui/_tracker.py: only what is new each poll); one poll thread
(ui/_poller.py) follows the runs still training and stops when all have ended or the widget closes. The
view's state is small and synced as two traitlets: ``rows`` (the table, in the order given) and
``series`` ({run name: {"train": [[step, loss]], "eval": [...]}}, at most ``MAX_POINTS`` per series),
set only when a poll found something new. Snapshots (text and HTML with an inline SVG of the curves)
stand in for the view in a saved notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import anywidget
import traitlets

from tunedeck.errors import RunNotFoundError
from tunedeck.types import TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._poller import Poller
from tunedeck.ui._tracker import RunTracker
from tunedeck.ui.monitor import format_number

POLL_SECONDS = 1.0
MAX_POINTS = 400  # per series: the view draws lines, not every step of a long run
#: One colour per run, in the order given (js/compare.js reads each row's ``color``).
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d")


def series_of(metrics: Iterable[dict[str, Any]], name: str, max_points: int = MAX_POINTS) -> list[list[float]]:
    """[[step, value]] of one metric sorted by step, a step logged twice keeping its newest point (as
    js/loss_chart.js metricSeries), thinned to ``max_points`` by an even stride that keeps the last."""
    by_step: dict[int, dict[str, Any]] = {}
    for m in metrics:
        if m["name"] != name or not isinstance(m.get("value"), (int, float)) or m["value"] != m["value"]:
            continue
        seen = by_step.get(m["step"])
        if seen is None or m["id"] >= seen["id"]:
            by_step[m["step"]] = m
    points = [[m["step"], m["value"]] for _, m in sorted(by_step.items())]
    if len(points) <= max_points:
        return points
    stride = len(points) / (max_points - 1)
    return [points[int(i * stride)] for i in range(max_points - 1)] + [points[-1]]


def lora_rank(run: TrainingRun | None) -> int | None:
    adapter = run.adapter if run is not None else None
    return adapter.get("rank") if isinstance(adapter, dict) else None


def cell_label(run: TrainingRun | None) -> str:
    """What a sweep's cell says about a run: ``lr 0.0001 · 1ep`` (``· r8`` with a LoRA rank)."""
    if run is None:
        return ""
    lr = f"lr {run.learning_rate}" if run.learning_rate is not None else "lr default"
    parts = [lr, run.training_duration or "default duration"]
    if lora_rank(run) is not None:
        parts.append(f"r{lora_rank(run)}")
    return " · ".join(parts)


class RunComparison(_snapshot.SnapshotDisplay, anywidget.AnyWidget):
    """Several runs side by side; ``close()`` stops its polling."""

    _esm = _static.esm("compare.js")
    _css = _static.css("common.css", "compare.css")

    rows: traitlets.List = traitlets.List().tag(sync=True)
    series = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, runs: Sequence[TrainingRun | str], *, client: Any = None, poll_seconds: float = POLL_SECONDS,
                 labels: Sequence[str] | None = None):
        names = [r.name if isinstance(r, TrainingRun) else str(r) for r in runs]
        if not names:
            raise ValueError("compare() needs at least one run")
        super().__init__()
        self._client = client
        cells = getattr(runs, "cells", None)  # a tunedeck.sweep result: the cells' own labels
        self._labels = list(labels) if labels else [c.label for c in cells] if cells else [None] * len(names)
        self.trackers = [RunTracker(name, self._get_client) for name in dict.fromkeys(names)]
        self._gone: dict[str, str] = {}
        self._poll_all(first=True)
        self._poller: Poller | None = None
        if not self.finished:
            self._poller = Poller(self, poll_seconds, name="tunedeck-compare").start()

    # -- public -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Every run has ended (or is gone): nothing more to follow."""
        return all(t.terminal or t.name in self._gone for t in self.trackers)

    @property
    def polling(self) -> bool:
        return self._poller is not None and self._poller.running

    def refresh(self) -> None:
        """Read what is new now (the poll thread does this about once a second)."""
        self._poll_all()

    def close(self) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.stop()
        super().close()

    # -- polling ----------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            from tunedeck.client import get_client

            return get_client()
        return self._client

    def _poll_all(self, first: bool = False) -> bool:
        changed = first
        errors = []
        for tracker in self.trackers:
            if tracker.name in self._gone or (tracker.terminal and not first):
                continue
            try:
                changed = bool(tracker.poll()) or changed
            except RunNotFoundError:
                self._gone[tracker.name] = "deleted"
                changed = True
            except Exception as exc:  # noqa: BLE001 - shown in the widget; the next poll retries
                errors.append(f"{tracker.name}: {_snapshot.describe(exc)}")
        self.error = "; ".join(errors)
        if changed:
            self._update()
        return changed

    def _poll(self) -> bool:
        if self.comm is None:
            return False
        self._poll_all()
        return not self.finished

    def _poll_failed(self, exc: Exception) -> None:
        self.error = _snapshot.describe(exc) + " — retrying"

    def _update(self) -> None:
        self.series = {t.name: {"train": series_of(t.metrics, "train/loss"), "eval": series_of(t.metrics, "eval/loss")}
                       for t in self.trackers}
        self.rows = self._rows()
        if self.finished:
            self._refresh_snapshot()

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, tracker in enumerate(self.trackers):
            run, s = tracker.run, tracker.summary()
            rows.append({
                "name": tracker.name,
                "label": self._labels[i] if i < len(self._labels) and self._labels[i] else cell_label(run),
                "color": PALETTE[i % len(PALETTE)],
                "learning_rate": run.learning_rate if run else None,
                "training_duration": run.training_duration if run else None,
                "lora_rank": lora_rank(run),
                "status": "DELETED" if tracker.name in self._gone else s.get("status", "UNKNOWN"),
                "loss": s.get("loss"),
                "eval_loss": s.get("eval_loss"),
                "seconds": run.duration_seconds if run else None,
                "registered_model_name": s.get("registered_model_name"),
                "registered_model_version": s.get("registered_model_version"),
                "step": s.get("step"),
                "total_steps": s.get("total_steps"),
                "best": False,
            })
        best = best_row(rows)
        if best is not None:
            best["best"] = True
        return rows

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot_text(self) -> str:
        lines = [f"tunedeck comparison of {len(self.rows)} runs"]
        for r in self.rows:
            lines.append("  " + " · ".join(str(c) for c in table_row(r)) + ("  (best)" if r["best"] else ""))
        if self.error:
            lines.append(f"  ! {self.error}")
        return "\n".join(lines)

    def _snapshot_html(self) -> str:
        esc = _snapshot.esc
        legend = "".join(f"<span style='color:{r['color']};margin-right:10px'>&#9632; {esc(r['label'])}</span>"
                         for r in self.rows)
        parts = [f"<div><b>Comparison of {len(self.rows)} runs</b></div>", snapshot_svg(self.rows, self.series),
                 f"<div style='font-size:12px'>{legend}</div>",
                 _snapshot.table(TABLE_HEADER, [table_row(r) + (("best",) if r["best"] else ("",)) for r in self.rows])]
        if self.error:
            parts.append(f"<div style='color:#b91c1c'>{esc(self.error)}</div>")
        return f"<div class='tunedeck-snapshot' style='font-size:13px'>{''.join(parts)}</div>"


TABLE_HEADER = ["run", "learning rate", "duration", "LoRA rank", "status", "final loss", "final eval loss", "time", "registered",
                ""]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the lowest final eval loss (train loss where no run has an eval loss), among runs
    that completed (among all while none has); None while fewer than two runs have that loss."""
    key = "eval_loss" if any(r["eval_loss"] is not None for r in rows) else "loss"
    measured = [r for r in rows if r[key] is not None]
    if len(measured) < 2:
        return None
    done = [r for r in measured if r["status"] == "COMPLETED"]
    return min(done or measured, key=lambda r: r[key])


def fmt_seconds(seconds: float | None) -> str:
    """As js/common.js fmtDuration: 45s, 3m 07s, 1h 02m, 2d 5h."""
    if seconds is None:
        return ""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 48 * 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def table_row(r: dict[str, Any]) -> tuple[Any, ...]:
    num = lambda v: format_number(v) if v is not None else ""  # noqa: E731
    registered = f"{r['registered_model_name']} v{r['registered_model_version']}" if r["registered_model_version"] else ""
    return (r["name"], r["learning_rate"] if r["learning_rate"] is not None else "default", r["training_duration"] or "default",
            r["lora_rank"] if r["lora_rank"] is not None else "", r["status"], num(r["loss"]), num(r["eval_loss"]),
            fmt_seconds(r["seconds"]), registered)


def snapshot_svg(rows: list[dict[str, Any]], series: dict[str, Any], width: int = 520, height: int = 200) -> str:
    """The train curves (eval dashed) as a plain inline SVG, for the HTML snapshot (no script needed)."""
    pts = [p for r in rows for kind in ("train", "eval") for p in series.get(r["name"], {}).get(kind, [])]
    if not pts:
        return "<div>(no loss points yet)</div>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    sx = lambda x: 40 + (x - x0) / (x1 - x0) * (width - 50)  # noqa: E731
    sy = lambda y: 10 + (1 - (y - y0) / (y1 - y0)) * (height - 30)  # noqa: E731
    paths = []
    for r in rows:
        for kind, dash in (("train", ""), ("eval", " stroke-dasharray='4 3'")):
            line = series.get(r["name"], {}).get(kind, [])
            if line:
                d = "".join(f"{'L' if i else 'M'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(line))
                paths.append(f"<path d='{d}' fill='none' stroke='{r['color']}' stroke-width='1.5'{dash}/>")
    axis = (f"<text x='2' y='14' font-size='10'>{format_number(y1)}</text><text x='2' y='{height - 20}' font-size='10'>"
            f"{format_number(y0)}</text><text x='{width - 10}' y='{height - 4}' font-size='10' text-anchor='end'>"
            f"step {x1:g}</text>")
    return f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}'>{axis}{''.join(paths)}</svg>"


def compare(runs: Iterable[TrainingRun | str], **options: Any) -> RunComparison:
    """A live comparison of ``runs`` (TrainingRuns or names; a tunedeck.sweep result labels each by its cell)."""
    return RunComparison(runs if isinstance(runs, Sequence) else list(runs), **options)



__all__ = ["RunComparison", "compare"]
