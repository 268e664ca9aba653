"""Saved notebooks in JupyterLab 4: reopened without their kernel, each tunedeck widget shows its last
snapshot (never "Error displaying widget: model not found"); after a kernel restart the old views say
they are stale and offer no actions. (Notebook 7 is not installed in this environment; it draws outputs
with the same JupyterLab parts and class names.)"""

from __future__ import annotations

import json

import pytest

from tests.browser.lab import ARTIFACTS, open_notebook, run_all_cells, save_notebook, wait_kernel_idle
from tests.browser.service_runs import notebook, shut_down_kernels, start_run, use_lab_service, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=False)


def visible_texts(page, text: str) -> list[str]:
    return [loc.inner_text() for loc in page.get_by_text(text).all() if loc.is_visible()]


def test_reopened_notebook_shows_each_widgets_last_snapshot(lab, page, monkeypatch):
    use_lab_service(lab, monkeypatch)
    name = start_run(lab, "2ba")
    wait_status(name, {"COMPLETED", "FAILED"})
    file = notebook(lab, "saved.ipynb",
                    f"import tunedeck\nmonitor = tunedeck.monitor({name!r})\nmonitor",
                    "runs = tunedeck.runs()\nruns")

    # -- live: the views draw, and their snapshots stay out of sight ----------------------------------------
    open_notebook(page, lab, file)
    run_all_cells(page)
    monitor = page.locator(".td-monitor").first
    monitor.wait_for(timeout=90_000)
    runs = page.locator(".td-runs")
    runs.wait_for(timeout=60_000)
    page.wait_for_function("el => el.querySelectorAll('[data-testid=run-row]').length >= 1", arg=runs.element_handle(), timeout=30_000)
    wait_kernel_idle(page)
    assert page.locator(".tunedeck-fallback").count() == 2  # one snapshot output per widget, in the page...
    assert not [f for f in page.locator(".tunedeck-fallback").all() if f.is_visible()]  # ...hidden behind its live view
    assert not page.locator("[data-testid=stale]:visible").count()
    save_notebook(page)

    saved = json.loads((lab.root / file).read_text())
    for cell in saved["cells"]:
        kinds = [sorted(o["data"]) for o in cell["outputs"] if o["output_type"] == "display_data"]
        assert kinds == [[WIDGET_VIEW], ["text/html", "text/plain"]], kinds  # the live view, then its snapshot
    assert "COMPLETED" in "".join(saved["cells"][0]["outputs"][1]["data"]["text/plain"])

    # -- reopen with a new kernel: no model behind the views --------------------------------------------------
    shut_down_kernels(lab)
    open_notebook(page, lab, file)
    fallbacks = page.locator(".tunedeck-fallback")
    fallbacks.first.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('.tunedeck-fallback')].filter(e => e.offsetParent).length === 2", timeout=30_000)
    # JupyterLab did give up on the models (its text is in the page), but nobody sees it
    page.wait_for_function("() => document.body.innerText.includes('model not found') || "
                           "[...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.textContent.includes('model not found'))",
                           timeout=30_000)
    assert visible_texts(page, "model not found") == []
    assert page.locator(".td-monitor").count() == 0 and page.locator(".td-runs").count() == 0
    monitor_snapshot, runs_snapshot = (f.inner_text() for f in fallbacks.all())
    assert name in monitor_snapshot and "COMPLETED" in monitor_snapshot
    assert "tunedeck runs" in runs_snapshot and name in runs_snapshot
    assert "Run the cell again" in monitor_snapshot
    shot(page, "reopened-snapshots")


def test_after_a_kernel_restart_the_old_views_say_stale_and_offer_no_actions(lab, page, monkeypatch):
    from tunedeck import foundation_model as fm

    use_lab_service(lab, monkeypatch)
    name = start_run(lab, "100000ba")
    try:
        wait_status(name, {"RUNNING"})
        file = notebook(lab, "restart.ipynb", "import tunedeck\nruns = tunedeck.runs()\nruns", "form = tunedeck.form()\nform")
        open_notebook(page, lab, file)
        run_all_cells(page)
        runs = page.locator(".td-runs")
        runs.wait_for(timeout=90_000)
        row = runs.locator(f"[data-testid=run-row][data-name='{name}']")
        row.wait_for(timeout=30_000)
        form = page.locator(".td-form")
        form.wait_for(timeout=60_000)
        wait_kernel_idle(page)
        cancel = row.locator("[data-testid=cancel]")
        assert cancel.is_enabled() and row.get_attribute("data-status") == "RUNNING"
        assert runs.locator("[data-testid=stale]").inner_text() == ""

        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").first.click()
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

        stale = runs.locator("[data-testid=stale]")
        page.wait_for_function("el => el.textContent.includes('kernel that has stopped')", arg=stale.element_handle(), timeout=30_000)
        assert stale.is_visible()
        assert cancel.is_disabled()
        assert row.locator("[data-testid=delete]").is_disabled() and row.locator("[data-testid=open]").is_disabled()
        cancel.click(force=True)  # a click on it does nothing: no confirmation appears
        assert row.locator("[data-testid=confirm-cancel]").count() == 0

        # the form: one line saying so, not a red chain icon per control
        before = form.evaluate("el => getComputedStyle(el, '::before').content")
        assert "kernel that has stopped" in before
        icons = form.evaluate(
            "el => [...el.querySelectorAll('.jupyter-widgets-disconnected')]"
            ".filter(e => !['none', 'normal', ''].includes(getComputedStyle(e, '::before').content)).length"
        )
        assert form.evaluate("el => el.querySelectorAll('.jupyter-widgets-disconnected').length") > 10  # the controls are marked...
        assert icons == 0  # ...and none draws the icon
        # the monitor (no handling of its own yet): the shared style says so and takes the clicks away
        monitor = page.locator(".td-monitor").first
        shot(page, "stale-after-restart")
        assert fm.get(name).status.value == "RUNNING"  # the restart left the run alone
    finally:
        fm.cancel(name)


def test_a_notebook_run_headless_opens_with_its_saved_views_marked_stale(lab, page, monkeypatch):
    """nbclient (papermill, CI) saves the widget state in the notebook: JupyterLab draws the views from it,
    with no kernel behind them; they show their last state, say it is stale and offer no actions."""
    import nbformat
    from nbclient import NotebookClient

    use_lab_service(lab, monkeypatch)
    name = start_run(lab, "2ba")
    wait_status(name, {"COMPLETED", "FAILED"})
    file = notebook(lab, "headless.ipynb", "import tunedeck\nruns = tunedeck.runs()\nruns")
    nb = nbformat.read(lab.root / file, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(lab.root)}}).execute()
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {})
    nbformat.write(nb, lab.root / file)

    open_notebook(page, lab, file)
    # JupyterLab 4.6 may draw the view from the saved state (then it must say it is stale and offer no
    # actions) or find no model (then the snapshot shows); never the error, never both.
    page.wait_for_function("() => document.querySelector('.td-runs [data-testid=stale]')?.textContent.includes('kernel that has stopped')"
                           " || [...document.querySelectorAll('.tunedeck-fallback')].some(e => e.offsetParent)", timeout=60_000)
    wait_kernel_idle(page)
    page.wait_for_timeout(1000)  # let a late view replace the snapshot if one is coming (no assertion on timing)
    live = page.locator(".td-runs")
    snapshots = [f for f in page.locator(".tunedeck-fallback").all() if f.is_visible()]
    if live.count():
        row = live.locator(f"[data-testid=run-row][data-name='{name}']")
        assert "kernel that has stopped" in live.locator("[data-testid=stale]").inner_text()
        assert row.locator("[data-testid=open]").is_disabled() and row.locator("[data-testid=delete]").is_disabled()
        assert snapshots == []
    else:
        assert len(snapshots) == 1 and name in snapshots[0].inner_text()
    assert visible_texts(page, "model not found") == []
    shot(page, "headless-saved-state")
