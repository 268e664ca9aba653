"""The monitor's loss chart in a real JupyterLab, read back from the page's element boxes.

Monitors over an in-memory FakeClient (no service, no training): a run with one loss point (the point is
drawn where the axes' own tick labels say 2.0 at step 1 is; hover shows a read-out), a run whose losses
fall from 1.8 to 0.8 (the range whose tick labels were wrong: each label's number equals its pixel
position mapped back through a scale fitted to all labels, and every drawn point maps back to its loss —
also on the log scale), a queued run (its place in the queue) and a completed one (the load line).
"""

from __future__ import annotations

import math

import nbformat
import pytest
from tests.browser.lab import ARTIFACTS, open_notebook, run_all_cells, wait_kernel_idle

pytestmark = [pytest.mark.browser]

LOSSES = [1.8 - i / 14 for i in range(15)]  # 1.8 … 0.8, the reported range

SETUP = f"""\
from datetime import timedelta
from tests.ui.fakes import FakeClient, T0
from tunedeck.types import RunStatus
from tunedeck.ui.monitor import RunMonitor
fake = FakeClient()
fake.add_run('one-point')
fake.train_step('one-point', 1, 100, 2.0)
fake.add_run('falling')
for step, loss in enumerate({LOSSES!r}, start=1):
    fake.train_step('falling', step, 15, loss)
fake.point('falling', 8, 'eval/loss', 1.5)
fake.add_run('ahead', RunStatus.QUEUED)
fake.add_run('waiting', RunStatus.QUEUED)
fake.set_status('waiting', RunStatus.QUEUED, created_at=T0 + timedelta(seconds=5),
                details='Queued: waiting for a free training slot')
done = fake.add_run('done', RunStatus.COMPLETED, registered_model_name='main.browser.done', registered_model_version=2)
"""

BOXES = """
el => {
  const box = (n) => {
    const r = n.getBoundingClientRect();
    return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height};
  };
  const all = (sel) => [...el.querySelectorAll(sel)];
  return {
    yTicks: all('[data-testid=y-tick]').map(n => ({label: n.textContent, ...box(n)})),
    xTicks: all('[data-testid=x-tick]').map(n => ({label: n.textContent, ...box(n)})),
    dots: all('[data-testid=train-dot]').map(n => ({step: Number(n.dataset.step), ...box(n)})),
    titles: all('.td-axis-title').map(n => n.textContent),
    plot: box(el.querySelector('[data-testid=loss-chart]')),
  };
}
"""


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares value = a * pixel + b."""
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((p - mx) ** 2 for p, _ in points)
    a = sum((p - mx) * (v - my) for p, v in points) / sxx
    return a, my - a * mx


def y_scale(boxes: dict, log: bool = False):
    """The value at a pixel row, fitted to all y tick labels; asserts each label equals its fitted value."""
    ticks = [(t["y"], float(t["label"])) for t in boxes["yTicks"]]
    assert len(ticks) >= 3, boxes["yTicks"]
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    a, b = fit([(y, f(v)) for y, v in ticks])
    step = abs(f(ticks[1][1]) - f(ticks[0][1]))
    for y, v in ticks:  # a label 1.5 where 1.55 is (the old bug) is 20% of a step off
        assert abs(a * y + b - f(v)) < 0.02 * step, f"label {v} sits where {a * y + b} is: {ticks}"
    return lambda y: (10 ** (a * y + b)) if log else a * y + b, step


def x_scale(boxes: dict):
    ticks = [(t["x"], float(t["label"].replace(",", ""))) for t in boxes["xTicks"]]
    assert len(ticks) >= 2, boxes["xTicks"]
    a, b = fit(ticks)
    for x, v in ticks:
        assert abs(a * x + b - v) < 0.02 * abs(ticks[1][1] - ticks[0][1])
    return lambda x: a * x + b


def test_chart_points_ticks_hover_and_header(lab, page):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(SETUP),
            nbformat.v4.new_code_cell("RunMonitor('one-point', client=fake, poll_seconds=3600)"),
            nbformat.v4.new_code_cell("RunMonitor('falling', client=fake, poll_seconds=3600)"),
            nbformat.v4.new_code_cell("RunMonitor('waiting', client=fake, poll_seconds=3600)"),
            nbformat.v4.new_code_cell("RunMonitor('done', client=fake)"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
    )
    nbformat.write(nb, lab.root / "chart.ipynb")
    open_notebook(page, lab, "chart.ipynb")
    page.keyboard.press("Control+b")
    run_all_cells(page)
    monitors = page.locator(".td-monitor")
    page.wait_for_function("() => document.querySelectorAll('.td-monitor').length === 4", timeout=90_000)
    wait_kernel_idle(page)
    one, falling, waiting, done = (monitors.nth(i) for i in range(4))

    # -- one point: drawn, where the axes say step 1 / loss 2.0 is -------------------------------------------
    one.locator("[data-testid=train-dot]").wait_for(timeout=30_000)
    one.scroll_into_view_if_needed()
    boxes = one.evaluate(BOXES)
    assert boxes["titles"] == ["step", "loss"]
    assert len(boxes["dots"]) == 1
    dot = boxes["dots"][0]
    assert dot["w"] > 3 and dot["h"] > 3  # really drawn, not a zero-size path
    value_at, step = y_scale(boxes)
    step_at = x_scale(boxes)
    px_per_value = abs(boxes["yTicks"][0]["y"] - boxes["yTicks"][1]["y"]) / step
    assert abs(value_at(dot["y"]) - 2.0) * px_per_value < 2.5, (dot, boxes["yTicks"])  # within 2.5 px
    assert abs(step_at(dot["x"]) - 1) < 0.05
    legend = one.locator("[data-testid=legend]").inner_text()
    assert "train 2" in legend and "loss 2" in one.locator("[data-testid=progress-text]").inner_text()

    # -- hover: a read-out of step and loss at the cursor --------------------------------------------------------
    readout = one.locator("[data-testid=chart-readout]")
    assert not readout.is_visible()
    page.mouse.move(dot["x"] + 20, dot["y"] - 30)
    page.wait_for_function(
        "el => el.offsetParent !== null && el.textContent.length > 0", arg=readout.element_handle(), timeout=5_000
    )
    assert readout.inner_text() == "step 1 · train 2"
    ARTIFACTS.mkdir(exist_ok=True)
    one.screenshot(path=str(ARTIFACTS / "browser-monitor-one-point.png"))
    assert one.locator("[data-testid=hover-line]").count() == 1
    page.mouse.move(5, 5)
    page.wait_for_function("el => el.offsetParent === null", arg=readout.element_handle(), timeout=5_000)

    # -- the falling run: every label is its position, every point maps back to its loss -------------------------------
    falling.scroll_into_view_if_needed()
    page.wait_for_function(
        "el => el.querySelectorAll('[data-testid=train-dot]').length === 15", arg=falling.element_handle(), timeout=30_000
    )
    for log in (False, True):
        if log:
            falling.locator("[data-testid=log-toggle]").check()
            page.wait_for_function(
                "el => el.querySelector('[data-testid=y-title]').textContent.includes('log')",
                arg=falling.element_handle(),
                timeout=5_000,
            )
        boxes = falling.evaluate(BOXES)
        value_at, step = y_scale(boxes, log=log)
        step_at = x_scale(boxes)
        for d in boxes["dots"]:
            assert abs(step_at(d["x"]) - d["step"]) < 0.1, d
            assert abs(value_at(d["y"]) - LOSSES[int(d["step"]) - 1]) < 0.03, (log, d, boxes["yTicks"])
    eighth = next(d for d in boxes["dots"] if d["step"] == 8)
    page.mouse.move(eighth["x"], eighth["y"] - 40)
    text = falling.locator("[data-testid=chart-readout]").inner_text()
    assert text == "step 8 · train 1.3 · eval 1.5", text
    falling.locator("[data-testid=smooth-toggle]").check()
    falling.locator("[data-testid=train-raw-line]").wait_for(timeout=5_000)
    page.mouse.move(eighth["x"], eighth["y"] - 40)  # (the click moved the pointer away)
    assert falling.locator("[data-testid=chart-readout]").inner_text().startswith("step 8 · train 1.3 (smoothed 1.")
    # one source: header, legend and panels show the latest point (step 15, loss 0.8, lr 0.001)
    assert "step 15/15" in falling.locator("[data-testid=progress-text]").inner_text()
    assert "loss 0.8" in falling.locator("[data-testid=progress-text]").inner_text()
    assert "train 0.8" in falling.locator("[data-testid=legend]").inner_text()
    assert falling.locator("[data-testid=lr-panel-value]").inner_text() == "0.001"
    assert falling.locator("[data-testid=details]").inner_text() == ""  # no second, older loss
    falling.screenshot(path=str(ARTIFACTS / "browser-monitor-chart.png"))

    # -- a queued run's place; a registered version's load line -------------------------------------------------------
    assert waiting.locator("[data-testid=progress-text]").inner_text() == "1 run ahead in the queue"
    assert waiting.locator("[data-testid=details]").inner_text() == "Queued: waiting for a free training slot"
    load = done.locator("[data-testid=load-line]").inner_text()
    assert 'tunedeck.registry.load_model("main.browser.done", 2)' in load
    assert not [e for e in page.console_errors if "tunedeck" in e.lower() or "anywidget" in e.lower()], page.console_errors
