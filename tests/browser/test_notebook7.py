"""The widgets in Notebook 7 (the classic-notebook look, built from JupyterLab 4's parts), headless Chromium.

A monitor of a completed tiny run and the runs browser render as live views (their history comes from the
kernel, in answer to the view's own sync message); the notebook saved and reopened with a new kernel
shows each widget's text/HTML snapshot in their place, never "model not found". Same checks as
test_saved_notebooks.py in JupyterLab; what differs is Notebook 7's page: a notebook opens at
/notebooks/<name> in a page of its own, there is no status bar (the kernel's state is the toolbar's
execution indicator and kernel name), and saving shows no dirty mark on a tab.
"""

from __future__ import annotations

import json

import pytest

from tests.browser.service_runs import KERNEL, notebook, shut_down_kernels, start_run, use_lab_service, wait_status
from tests.browser.test_saved_notebooks import WIDGET_VIEW, shot, visible_texts
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


# -- Notebook 7's page ---------------------------------------------------------------------------------------
def kernel_session_idle(server, file: str) -> bool:
    """The server has a session for ``file`` whose kernel is idle (it exists, and has started)."""
    sessions = server.api("GET", "/api/sessions").json()
    return any(s["path"] == file and s["kernel"]["execution_state"] == "idle" for s in sessions)


def wait_kernel_idle(page, server, file: str, timeout_ms: int = 90_000) -> None:
    """The toolbar names the notebook's kernel and its execution indicator says idle, and the server agrees.

    The indicator alone is not enough: it is drawn once a kernel is connected, but says nothing about a
    kernel that is still starting; the kernel name replaces "No Kernel" / "Kernel starting" only then."""
    page.wait_for_function(
        "name => document.querySelector('.jp-KernelName')?.innerText.trim() === name"
        " && document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
        arg=KERNEL["kernelspec"]["display_name"], timeout=timeout_ms,
    )
    wait_for(lambda: kernel_session_idle(server, file), timeout=timeout_ms / 1000, interval=0.3)


def open_notebook(page, server, file: str) -> None:
    page.goto(server.notebook_url(file))
    page.wait_for_selector("#main-panel .jp-NotebookPanel .jp-Notebook", timeout=60_000)
    wait_kernel_idle(page, server, file)


def run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def save_notebook(page, server, file: str, views: int) -> dict:
    """Control+S, then wait until the file on disk holds the ``views`` live widget outputs."""
    page.keyboard.press("Control+s")

    def saved() -> dict | None:
        nb = json.loads((server.root / file).read_text())
        found = sum(WIDGET_VIEW in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
        return nb if found == views else None

    return wait_for(saved, timeout=20, interval=0.3)


def test_live_views_in_notebook7_and_their_snapshots_once_reopened(notebook7, page, monkeypatch):
    server = notebook7
    use_lab_service(server, monkeypatch)
    name = start_run(server, "2ba", register_to="main.nb7")
    assert wait_status(name, {"COMPLETED", "FAILED"}) == "COMPLETED"
    from tunedeck import foundation_model as fm

    events = len(fm.get_events(name))
    file = notebook(server, "nb7.ipynb",
                    f"import tunedeck\nmonitor = tunedeck.monitor({name!r})\nmonitor",
                    "runs = tunedeck.runs()\nruns")

    # -- live: Notebook 7's own page (not JupyterLab's shell), the views drawn from the kernel ----------------
    open_notebook(page, server, file)
    assert page.locator("body[data-notebook=notebooks]").count() == 1  # Notebook 7's notebook page
    assert page.locator("#jp-main-statusbar").count() == 0 and page.locator(".jp-LabShell").count() == 0
    run_all_cells(page)
    monitor = page.locator("#main-panel .jp-OutputArea-output .td-monitor").first
    monitor.wait_for(timeout=90_000)
    page.wait_for_function(  # the whole history, sent by the kernel in answer to the view's sync message
        "([el, n]) => el.querySelector('[data-testid=status]')?.textContent === 'COMPLETED'"
        " && el.querySelector('[data-testid=events-count]')?.textContent === `(${n})`"
        " && !!el.querySelector('[data-testid=results-model-name]')",
        arg=[monitor.element_handle(), events], timeout=60_000,
    )
    assert monitor.locator("[data-testid=run-name]").inner_text() == name
    assert monitor.locator("[data-testid=train-line]").get_attribute("d").count("L") >= 1  # 2 steps: a drawn segment
    assert f"main.nb7.{name}" in monitor.locator("[data-testid=results-model]").inner_text()
    box = monitor.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 200  # drawn, not collapsed
    runs = page.locator("#main-panel .td-runs")
    runs.wait_for(timeout=60_000)
    row = runs.locator(f"[data-testid=run-row][data-name='{name}']")
    row.wait_for(timeout=30_000)
    assert row.get_attribute("data-status") == "COMPLETED"
    assert runs.locator("[data-testid=stale]").inner_text() == ""  # a live kernel behind it
    assert row.locator("[data-testid=open]").is_enabled()
    wait_kernel_idle(page, server, file)
    # each widget also wrote its snapshot output, in the page but hidden behind the live view
    assert page.locator(".tunedeck-fallback").count() == 2
    assert not [f for f in page.locator(".tunedeck-fallback").all() if f.is_visible()]
    assert visible_texts(page, "model not found") == []
    shot(page, "notebook7-live")

    saved = save_notebook(page, server, file, views=2)
    for cell in saved["cells"]:
        kinds = [sorted(o["data"]) for o in cell["outputs"] if o["output_type"] == "display_data"]
        assert kinds == [[WIDGET_VIEW], ["text/html", "text/plain"]], kinds  # the live view, then its snapshot

    # -- reopened with a new kernel: no model behind the views, the snapshots show instead --------------------
    shut_down_kernels(server)
    open_notebook(page, server, file)
    page.wait_for_function("() => [...document.querySelectorAll('.tunedeck-fallback')].filter(e => e.offsetParent).length === 2",
                           timeout=30_000)
    # Notebook 7 did give up on the models (its error text is in the page), but nobody sees it
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some(e => e.textContent.includes('model not found'))", timeout=30_000)
    assert visible_texts(page, "model not found") == []
    assert visible_texts(page, "Error displaying widget") == []
    assert page.locator(".td-monitor").count() == 0 and page.locator(".td-runs").count() == 0
    monitor_snapshot, runs_snapshot = (f.inner_text() for f in page.locator(".tunedeck-fallback").all())
    assert name in monitor_snapshot and "COMPLETED" in monitor_snapshot and "Run the cell again" in monitor_snapshot
    assert "tunedeck runs" in runs_snapshot and name in runs_snapshot
    shot(page, "notebook7-reopened-snapshots")
