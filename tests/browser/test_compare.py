"""A 2×2 sweep and its comparison view in a real JupyterLab 4: a notebook cell runs tunedeck.sweep (two
learning rates × 2 and 3 batches of a tiny instruction model built by the test, trained by the lab's
service) and shows tunedeck.compare(runs). The view shows 4 legend entries and 4 curves, its table 4 rows
that reach COMPLETED with the final losses the service recorded, and the best run (lowest final loss) is
marked, once."""

from __future__ import annotations

import pytest

from tests.browser.lab import ARTIFACTS, open_notebook, run_all_cells, wait_kernel_idle
from tests.browser.service_runs import notebook, use_lab_service
from tests.helpers import PAIRS, write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

RUN_TIMEOUT_MS = 540_000
CELLS = {(1e-3, "2ba"), (1e-3, "3ba"), (3e-3, "2ba"), (3e-3, "3ba")}


def latest(name: str, metric: str) -> float | None:
    from tunedeck.client import get_client

    values = [m["value"] for m in get_client().metrics(name) if m["name"] == metric]
    return values[-1] if values else None


def steps(name: str, metric: str) -> set[int]:
    from tunedeck.client import get_client

    return {m["step"] for m in get_client().metrics(name) if m["name"] == metric}


def rows_of(view) -> list[dict]:
    return view.evaluate("""el => [...el.querySelectorAll('[data-testid=compare-row]')].map(r => ({
        name: r.dataset.run, text: r.textContent,
        lr: r.querySelector('[data-testid=cell-lr]').textContent,
        duration: r.querySelector('[data-testid=cell-duration]').textContent,
        loss: r.querySelector('[data-testid=cell-loss]').textContent,
        best: !!r.querySelector('[data-testid=best]')}))""")


def test_sweep_2x2_and_its_comparison_view(lab, page, monkeypatch):
    from tunedeck import config
    from tunedeck import foundation_model as fm
    from tunedeck.training.tiny import build_tiny_model

    use_lab_service(lab, monkeypatch)
    model_dir = config.models_root() / "tiny-sweep"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, [f"{q} {a}" for q, a in PAIRS])
    data = write_jsonl(lab.home / "sweep" / "train.jsonl", [{"prompt": q, "response": a} for q, a in PAIRS])
    source = (
        "import tunedeck\n"
        "runs = tunedeck.sweep(learning_rates=[1e-3, 3e-3], training_durations=['2ba', '3ba'],\n"
        f"                      model='tiny-sweep', train_data_path={str(data)!r}, register_to='main.sweep',\n"
        "                      task_type='INSTRUCTION_FINETUNE', context_length=64)\n"
        "tunedeck.compare(runs)"
    )
    open_notebook(page, lab, notebook(lab, "sweep.ipynb", source))
    page.keyboard.press("Control+b")  # the file browser folded away: room for the table
    run_all_cells(page)
    view = page.locator(".td-compare").first
    view.wait_for(timeout=120_000)
    wait_kernel_idle(page)

    # -- 4 runs, one per cell, all reaching COMPLETED in the view ------------------------------------------------------
    page.wait_for_function(
        "el => { const rows = [...el.querySelectorAll('[data-testid=compare-row]')];"
        " return rows.length === 4 && rows.every(r => r.textContent.includes('COMPLETED')); }",
        arg=view.element_handle(), timeout=RUN_TIMEOUT_MS)
    rows = rows_of(view)
    names = [r["name"] for r in rows]
    assert len(set(names)) == 4
    runs = {name: fm.get(name) for name in names}
    assert all(run.status.value == "COMPLETED" for run in runs.values())
    assert {(float(run.learning_rate), run.training_duration) for run in runs.values()} == CELLS
    for r in rows:  # the table's settings are the run's own
        assert float(r["lr"]) == pytest.approx(float(runs[r["name"]].learning_rate))
        assert r["duration"] == runs[r["name"]].training_duration

    # -- final losses: the service's -----------------------------------------------------------------------------------
    # The view's last poll may land just after COMPLETED shows: wait until every loss cell holds the final value.
    finals = {name: latest(name, "train/loss") for name in names}
    assert all(v is not None for v in finals.values()), finals
    page.wait_for_function(
        "([el, finals]) => [...el.querySelectorAll('[data-testid=compare-row]')].every(r =>"
        " Math.abs(parseFloat(r.querySelector('[data-testid=cell-loss]').textContent) - finals[r.dataset.run])"
        " <= 1e-3 * Math.abs(finals[r.dataset.run]))",
        arg=[view.element_handle(), finals], timeout=30_000)
    rows = rows_of(view)
    for r in rows:
        assert float(r["loss"]) == pytest.approx(finals[r["name"]], rel=1e-3), (r, finals)

    # -- the best run (no eval data: lowest final train loss) is marked, once --------------------------------------------
    best = [r["name"] for r in rows if r["best"]]
    assert best == [min(finals, key=lambda n: finals[n])], (best, finals)
    assert view.locator("tr.td-cmp-best").count() == 1

    # -- legend and curves: one each per run ----------------------------------------------------------------------------
    legend = view.locator("[data-testid=legend-item]")
    assert legend.count() == 4
    assert {legend.nth(i).get_attribute("data-run") for i in range(4)} == set(names)
    curves = view.locator("[data-testid=compare-chart] [data-testid=train-line]")
    assert {curves.nth(i).get_attribute("data-run") for i in range(curves.count())} == set(names)
    assert curves.count() == 4
    for i in range(4):  # each curve holds every step the service logged for its run
        name = curves.nth(i).get_attribute("data-run")
        assert int(curves.nth(i).get_attribute("data-points")) == len(steps(name, "train/loss")) >= 1
    colors = {curves.nth(i).get_attribute("stroke") for i in range(4)}
    assert len(colors) == 4

    ARTIFACTS.mkdir(exist_ok=True)
    view.screenshot(path=str(ARTIFACTS / "browser-compare-sweep.png"))
    assert not [e for e in page.console_errors if "tunedeck" in e.lower() or "compare" in e.lower()], page.console_errors
