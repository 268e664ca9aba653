"""The widgets in a real JupyterLab, driven by headless Chromium.

One module-scoped JupyterLab and tunedeck service; the quickstart's set-up and form cells run, the test
fills the form and starts a tiny run (monitor reaches COMPLETED with events, a drawn loss chart and the
registered model; an HTML-looking eval prompt stays text), then starts a long run, reloads the page
mid-run (no history lost, training undisturbed) and cancels it from the monitor (STOPPED).
"""

from __future__ import annotations

import os
import re
import shutil
import time

import nbformat
import pytest

from tests.browser.lab import ARTIFACTS, REPO, open_notebook, run_all_cells, save_notebook, wait_kernel_idle

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

XSS = "<img src=x onerror=alert(1)>"
DOCS = REPO / "docs"
RUN_TIMEOUT_MS = 240_000


def quickstart_up_to_the_form(lab) -> str:
    """The quickstart's cells up to the form (the later ones would press Start themselves)."""
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if "form" in c.metadata.get("tags", []))
    nb.cells = nb.cells[: last + 1]
    nbformat.write(nb, lab.root / "quickstart.ipynb")
    return "quickstart.ipynb"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=False)


def doc_shot(page, locator, name: str) -> None:
    """A README screenshot: the widget alone, whole (a viewport tall enough for it), small enough to commit.

    Saved under test-artifacts/; copied over docs/ only with TUNEDECK_UPDATE_DOCS=1 (`make screenshots`),
    so a test run never edits tracked files.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    size = page.viewport_size
    page.set_viewport_size({"width": 1180, "height": 1800})
    try:
        locator.scroll_into_view_if_needed()
        page.wait_for_timeout(300)  # let the chart redraw at its new width
        locator.screenshot(path=str(path), animations="disabled")
    finally:
        page.set_viewport_size(size)
    assert path.stat().st_size < 300_000, f"{name} is {path.stat().st_size} bytes"
    if os.environ.get("TUNEDECK_UPDATE_DOCS") == "1":
        shutil.copy(path, DOCS / name)


def status_of(monitor) -> str:
    return monitor.locator("[data-testid=status]").inner_text()


def field(page, name: str):
    return page.locator(f".td-field-{name}")


def test_form_start_monitor_complete_reload_and_cancel(lab, page, monkeypatch):
    from tunedeck import foundation_model as fm
    import tunedeck.client.http as http

    monkeypatch.setenv("TUNEDECK_HOME", str(lab.home))  # the test reads the same service as the notebook
    http._client = None
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # -- the quickstart up to the form ------------------------------------------------------------------
    open_notebook(page, lab, quickstart_up_to_the_form(lab))
    page.keyboard.press("Control+b")  # fold the file browser away: more room for the widgets
    run_all_cells(page)
    form = page.locator(".td-form")
    form.wait_for(timeout=90_000)
    preview = page.locator("[data-testid=code-preview]")
    preview.wait_for()
    wait_kernel_idle(page)
    assert 'model="tiny-chat"' in preview.inner_text()
    assert field(page, "model").locator("select option:checked").inner_text().split() == ["tiny-chat", "(max", "context", "1,024)"]

    # -- fill it: a field error appears next to its field, then goes ------------------------------------
    register = field(page, "register_to").locator("input")
    register.fill("main")
    error = field(page, "register_to").locator(".td-field-error")
    page.wait_for_function("el => el.innerText.includes(\"is not '<catalog>.<schema>'\")", arg=error.element_handle(), timeout=10_000)
    register.fill("main.browser")
    page.wait_for_function("el => el.innerText.trim() === ''", arg=error.element_handle(), timeout=10_000)
    duration = field(page, "training_duration").locator("input")
    duration.fill("30")
    duration.press("Enter")
    page.locator(".td-section-evaluation").get_by_text("Evaluation — eval data, eval prompts").click()
    prompts = field(page, "eval_prompts").locator("textarea")
    prompts.wait_for()
    prompts.fill(f"What is the capital of Zorbania?\n{XSS}")
    prompts.press("Tab")
    page.wait_for_function(
        "el => el.innerText.includes('register_to=\"main.browser\"') && el.innerText.includes('training_duration=\"30ba\"') && el.innerText.includes('<img src=x')",
        arg=preview.element_handle(), timeout=10_000,
    )
    code = preview.inner_text()
    assert f'eval_prompts=["What is the capital of Zorbania?", "{XSS}"]' in code
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    page.locator("[data-testid=copy]").click()
    page.wait_for_function("() => document.querySelector('[data-testid=copy-status]')?.textContent === 'copied'", timeout=5_000)
    assert page.evaluate("() => navigator.clipboard.readText()") == code

    # -- check data --------------------------------------------------------------------------------------
    field(page, "train_data_path").get_by_role("button", name="Check data").click()
    check = page.locator(".td-data-check")
    page.wait_for_function("el => /rows/.test(el.innerText)", arg=check.element_handle(), timeout=60_000)
    assert re.search(r"ok: 16 rows; tokens min \d+ / median \d+ / max \d+", check.inner_text()), check.inner_text()
    wait_kernel_idle(page)
    doc_shot(page, form, "form.png")

    # -- start: the monitor opens below the form and reaches COMPLETED ----------------------------------------
    page.locator("button.td-start").click()
    monitor = page.locator(".td-form-monitors .td-monitor").first
    monitor.wait_for(timeout=60_000)
    run_name = monitor.locator("[data-testid=run-name]").inner_text()
    page.wait_for_function(
        "el => el.querySelector('[data-testid=status]')?.textContent === 'COMPLETED'", arg=monitor.element_handle(), timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_function(  # newest event first; the final state drawn (the results card)
        "el => el.querySelector('[data-testid=results-model-name]') && el.querySelectorAll('[data-testid=gens-row]').length > 0"
        " && el.querySelector('[data-testid=event-row] .td-ev-type')?.textContent === 'COMPLETED'",
        arg=monitor.element_handle(), timeout=30_000,
    )
    assert monitor.locator("[data-testid=event-row]").count() > 5
    assert monitor.locator("[data-testid=events-count]").inner_text() == f"({len(fm.get_events(run_name))})"
    path = monitor.locator("[data-testid=train-line]").get_attribute("d")
    assert path.count("L") >= 10  # one segment per logged step, drawn
    assert monitor.locator("[data-testid=eval-line]").count() == 1
    registered = monitor.locator("[data-testid=results-model]").inner_text()
    assert f"main.browser.{run_name}" in registered and "version 1" in registered
    assert "100%" in monitor.locator("[data-testid=progress-text]").inner_text()

    # -- model text is text: the prompt shows literally, nothing was interpreted --------------------------------
    prompts_shown = monitor.locator("[data-testid=gens-row] .td-gen-prompt").all_inner_texts()
    assert XSS in prompts_shown
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []
    doc_shot(page, monitor, "monitor.png")
    shot(page, "completed")

    # -- a second, long run: reload the page mid-run, then cancel it from the monitor ---------------------------
    duration.fill("100000")
    duration.press("Enter")
    page.wait_for_function("el => el.innerText.includes('100000ba')", arg=preview.element_handle(), timeout=10_000)
    page.locator("button.td-start").click()
    page.wait_for_function(
        "name => { const m = document.querySelector('.td-form-monitors .td-monitor [data-testid=run-name]'); return m && m.textContent !== name; }",
        arg=run_name, timeout=60_000,
    )
    long_run = page.locator(".td-form-monitors .td-monitor").first
    long_name = long_run.locator("[data-testid=run-name]").inner_text()
    page.wait_for_function(
        "el => [...el.querySelectorAll('[data-testid=event-row]')].some(r => r.innerText.includes('TRAIN_UPDATED'))",
        arg=long_run.element_handle(), timeout=RUN_TIMEOUT_MS,
    )
    wait_kernel_idle(page)
    save_notebook(page)
    before = len(fm.get_events(long_name))
    page.reload()
    wait_kernel_idle(page)
    long_run = page.locator(".td-monitor", has=page.locator(f"[data-testid=run-name]:text-is('{long_name}')")).first
    long_run.wait_for(timeout=60_000)
    # the whole history is back (count and the oldest row), and training went on while the page was away
    page.wait_for_function(
        "([el, n]) => parseInt(el.querySelector('[data-testid=events-count]').textContent.replace(/[^0-9]/g, '')) > n",
        arg=[long_run.element_handle(), before], timeout=60_000,
    )
    viewport = long_run.locator("[data-testid=events]")
    viewport.evaluate("el => { el.scrollTop = el.scrollHeight; el.dispatchEvent(new Event('scroll')); }")
    page.wait_for_function(
        "el => [...el.querySelectorAll('[data-testid=event-row]')].some(r => r.innerText.includes('CREATED'))",
        arg=long_run.element_handle(), timeout=10_000,
    )
    assert fm.get(long_name).status.value == "RUNNING"
    shot(page, "reloaded")

    long_run.locator("[data-testid=cancel]").click()
    long_run.locator("[data-testid=confirm-cancel]").click()
    page.wait_for_function(
        "el => el.querySelector('[data-testid=status]')?.textContent === 'STOPPED'", arg=long_run.element_handle(), timeout=60_000,
    )
    assert fm.get(long_name).status.value == "STOPPED"
    assert fm.get_events(long_name)[-1].type == "STOPPED"
    shot(page, "stopped")
    assert not [e for e in page.console_errors if "tunedeck" in e.lower() or "anywidget" in e.lower()], page.console_errors
    http._client = None


def two_short_runs(lab, monkeypatch) -> list[str]:
    """Two one-step runs of a tiny model in the lab's service, so the runs browser has rows to list whatever
    ran before (this test must not depend on the previous one)."""
    from tunedeck import config, foundation_model as fm
    from tunedeck.training.tiny import build_tiny_model
    import tunedeck.client.http as http
    from tests.helpers import PAIRS, write_jsonl

    monkeypatch.setenv("TUNEDECK_HOME", str(lab.home))
    http._client = None
    model_dir = config.models_root() / "tiny-runs"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, [f"{q} {a}" for q, a in PAIRS])
    data = write_jsonl(lab.home / "runs-browser" / "train.jsonl", [{"prompt": q, "response": a} for q, a in PAIRS])
    names = [fm.create(model="tiny-runs", train_data_path=str(data), register_to="main.browser",
                       task_type="INSTRUCTION_FINETUNE", training_duration="1ba").name for _ in range(2)]
    http._client = None
    return names


def test_ten_thousand_events_and_the_runs_browser(lab, page, monkeypatch):
    """A monitor over 10,000 events renders them all in seconds with a few dozen DOM rows; the runs
    browser lists the service's runs and opens a monitor."""
    two_short_runs(lab, monkeypatch)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(
            "from tests.ui.fakes import FakeClient\n"
            "from tunedeck.ui.monitor import RunMonitor\n"
            "fake = FakeClient()\n"
            "fake.add_run('big')\n"
            "for step in range(1, 10_000):\n"
            "    fake.train_step('big', step, 10_000, 5.0 / (1 + step / 500))\n"
            "RunMonitor('big', client=fake, poll_seconds=3600)"
        ),
        nbformat.v4.new_code_cell("import tunedeck\nbrowser = tunedeck.runs()\nbrowser"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
    nbformat.write(nb, lab.root / "many.ipynb")
    open_notebook(page, lab, "many.ipynb")
    run_all_cells(page)
    big = page.locator(".td-monitor").first
    big.wait_for(timeout=90_000)
    started = time.monotonic()
    page.wait_for_function(
        "el => el.querySelector('[data-testid=events-count]')?.textContent === '(10,000)'", arg=big.element_handle(), timeout=30_000,
    )
    took = time.monotonic() - started
    assert took < 10, f"10,000 events took {took:.1f} s to show"
    rows = big.locator("[data-testid=event-row]").count()
    assert 0 < rows <= 40  # virtualized: only the rows in view exist
    big.locator("[data-testid=events]").evaluate("el => { el.scrollTop = el.scrollHeight / 2; el.dispatchEvent(new Event('scroll')); }")
    page.wait_for_function("el => [...el.querySelectorAll('[data-testid=event-row]')].some(r => / 5\\d{3}\\//.test(r.innerText))",
                           arg=big.element_handle(), timeout=5_000)
    assert big.locator("[data-testid=event-row]").count() <= 40
    assert big.locator("[data-testid=train-line]").get_attribute("d").count("L") <= 600  # the chart draws a bounded path

    runs = page.locator(".td-runs")
    runs.wait_for(timeout=60_000)
    wait_kernel_idle(page)
    page.wait_for_function("el => el.querySelectorAll('[data-testid=run-row]').length >= 2", arg=runs.element_handle(), timeout=30_000)
    runs.locator("[data-testid=run-row]").first.get_by_role("button", name="Open").click()
    page.locator(".td-runs-monitors .td-monitor").wait_for(timeout=30_000)
    shot(page, "runs-browser")
