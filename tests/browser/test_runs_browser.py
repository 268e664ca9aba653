"""The runs browser in JupyterLab 4 at 700 px wide: every action button inside the window and not covered,
the day in "created", final train/eval loss equal to the service's metrics, sort by a column both ways,
filter by status and text, and the kernel's snapshot following the filter."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser.lab import ARTIFACTS, open_notebook, run_all_cells, save_notebook, wait_kernel_idle
from tests.browser.service_runs import notebook, start_run, use_lab_service, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

WIDTH = 700


def latest(name: str, metric: str) -> float | None:
    from tunedeck.client import get_client

    values = [m["value"] for m in get_client().metrics(name) if m["name"] == metric]
    return values[-1] if values else None


def table_rows(runs) -> list[dict]:
    return runs.evaluate("""el => [...el.querySelectorAll('[data-testid=run-row]')].map(r => ({
        name: r.dataset.name, status: r.dataset.status,
        created: r.querySelector('[data-testid=created]').textContent,
        train: r.querySelector('[data-testid=train-loss]').textContent,
        eval: r.querySelector('[data-testid=eval-loss]').textContent}))""")


def test_runs_browser_at_700px_sort_filter_losses_and_actions(lab, page, monkeypatch):
    from tunedeck import foundation_model as fm

    use_lab_service(lab, monkeypatch)
    done = [start_run(lab, "2ba", register_to="main.runs") for _ in range(2)]
    stopped = start_run(lab, "100000ba", register_to="main.runs")
    try:
        for name in done:
            wait_status(name, {"COMPLETED"})
        wait_status(stopped, {"RUNNING"})
    finally:
        fm.cancel(stopped)
    wait_status(stopped, {"STOPPED"})
    ours = {*done, stopped}

    page.set_viewport_size({"width": WIDTH, "height": 900})
    open_notebook(page, lab, notebook(lab, "runs.ipynb", "import tunedeck\nruns = tunedeck.runs()\nruns"))
    run_all_cells(page)
    runs = page.locator(".td-runs")
    runs.wait_for(timeout=90_000)
    page.wait_for_function("([el, n]) => el.querySelectorAll('[data-testid=run-row]').length >= n", arg=[runs.element_handle(), len(ours)],
                           timeout=30_000)
    wait_kernel_idle(page)

    # -- columns: the day in "created", the service's final losses --------------------------------------------
    rows = {r["name"]: r for r in table_rows(runs) if r["name"] in ours}
    assert set(rows) == ours
    for name, r in rows.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", r["created"]), r
        train = latest(name, "train/loss")
        assert train is not None or name == stopped  # cancelled early, it may not have trained a step
        assert (r["train"] == "") if train is None else float(r["train"]) == pytest.approx(train, rel=1e-3), (r, train)
        ev = latest(name, "eval/loss")
        assert (r["eval"] == "") if ev is None else float(r["eval"]) == pytest.approx(ev, rel=1e-3)

    # -- 700 px: every action button lies inside the window and its scroll box, and nothing covers it ----------------
    def check_actions_in_view() -> None:
        scroll = runs.locator(".td-runs-scroll").bounding_box()
        buttons = runs.locator("[data-testid=run-row] button")
        assert buttons.count() >= 2 * len(ours)
        for button in buttons.all():
            box = button.bounding_box()
            assert box and 0 <= box["x"] and box["x"] + box["width"] <= WIDTH, (button.inner_text(), box)
            assert scroll["x"] <= box["x"] and box["x"] + box["width"] <= scroll["x"] + scroll["width"] + 0.5, (box, scroll)
            assert on_top(box, "button") == button.get_attribute("data-testid"), button.inner_text()

    def on_top(box, selector: str) -> str | None:
        """The testid of the `selector` element drawn at the middle of box (None: something else covers it)."""
        return page.evaluate("([x, y, s]) => document.elementFromPoint(x, y)?.closest(s)?.dataset.testid ?? null",
                             [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, selector])

    ARTIFACTS.mkdir(exist_ok=True)
    check_actions_in_view()  # the file browser open beside the notebook: about 340 px for the output
    page.screenshot(path=str(ARTIFACTS / "browser-runs-700px-sidebar.png"))
    page.locator(".jp-Notebook").click()
    page.keyboard.press("Control+b")  # the file browser folded away: the table shows its main columns whole
    page.wait_for_function("() => document.querySelector('.jp-Notebook').getBoundingClientRect().width > 500", timeout=10_000)
    check_actions_in_view()
    actions_left = runs.locator("th.td-runs-actions").bounding_box()["x"]
    for testid in ("sort-name", "sort-status", "sort-created", "sort-train_loss", "sort-eval_loss"):
        box = runs.locator(f"[data-testid={testid}]").bounding_box()
        assert box["x"] + box["width"] <= actions_left + 0.5, testid  # the whole column left of the pinned actions
    page.screenshot(path=str(ARTIFACTS / "browser-runs-700px.png"))

    # -- sort by train loss, both ways (a run without a loss would go last either way) ----------------------------------
    def order() -> list[str]:
        return [r["name"] for r in table_rows(runs)]

    def losses() -> list[float]:
        return [float(r["train"]) for r in table_rows(runs) if r["train"]]

    runs.locator("[data-testid=sort-train_loss]").click()
    assert runs.locator("[data-testid=sort-train_loss]").get_attribute("aria-sort") == "ascending"
    assert losses() == sorted(losses()) and len(losses()) >= 2
    runs.locator("[data-testid=sort-train_loss]").click()
    assert runs.locator("[data-testid=sort-train_loss]").get_attribute("aria-sort") == "descending"
    assert losses() == sorted(losses(), reverse=True)
    runs.locator("[data-testid=sort-created]").click()  # back to newest first
    created = [r["created"] for r in table_rows(runs)]
    assert created == sorted(created, reverse=True)

    # -- filter by status, then by text ------------------------------------------------------------------------------
    runs.locator("[data-testid=status-filter]").select_option("STOPPED")
    shown = table_rows(runs)
    assert shown and {r["status"] for r in shown} == {"STOPPED"} and stopped in [r["name"] for r in shown]
    total = runs.locator("[data-testid=run-row]").count()
    assert re.fullmatch(rf"\({total} of \d+\)", runs.locator("[data-testid=runs-count]").inner_text())
    # the kernel got the filter: the saved snapshot lists what the table shows
    page.wait_for_function("() => [...document.querySelectorAll('.tunedeck-fallback')].some(e => e.textContent.includes('filtered (status: STOPPED)'))",
                           timeout=30_000)
    save_notebook(page)
    saved = json.loads((lab.root / "runs.ipynb").read_text())
    snapshot = "".join(saved["cells"][0]["outputs"][-1]["data"]["text/plain"])
    assert "filtered (status: STOPPED)" in snapshot and stopped in snapshot and done[0] not in snapshot

    runs.locator("[data-testid=status-filter]").select_option("all")
    runs.locator("[data-testid=text-filter]").fill(done[1].upper())  # any case
    assert order() == [done[1]]
    runs.locator("[data-testid=text-filter]").fill("no run is called this")
    assert order() == [] and runs.locator("[data-testid=runs-empty]").inner_text() == "no run matches the filter"
    runs.locator("[data-testid=text-filter]").fill("")
    assert set(order()) >= ours
