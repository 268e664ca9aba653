"""The three example notebooks execute top to bottom on a tiny model, and what they save is readable
without a kernel (a text/HTML snapshot beside each widget view)."""

from __future__ import annotations

import json

import nbformat
import pytest

from tests.notebooks.nbrun import NOTEBOOKS, execute, outputs, text_of

pytestmark = pytest.mark.e2e

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shown(nb, cell: int) -> dict:
    """What a cell displayed, all in one bundle: a tunedeck widget displays its live view and its snapshot
    as two outputs (ui/_snapshot.py says why)."""
    return {k: v for o in outputs(nb, cell) if o.get("output_type") == "display_data" for k, v in o["data"].items()}


def code_cells(nb):
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def find_cell(nb, needle: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source)


def test_quickstart(nb_home, tmp_path):
    nb = execute(nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4), tmp_path, "quickstart.ipynb")
    waited = "".join(text_of(o) for o in outputs(nb, find_cell(nb, "form.monitor.wait")))
    assert waited.startswith("COMPLETED -> main.quickstart.") and waited.strip().endswith("version 1")

    form_out = shown(nb, find_cell(nb, "tunedeck.form("))
    assert WIDGET_VIEW in form_out and "fm.create(" in form_out["text/plain"] and "fm.create(" in form_out["text/html"]

    run_out = shown(nb, find_cell(nb, "fm.get(run)"))  # a TrainingRun displays as its monitor
    assert WIDGET_VIEW in run_out
    html = run_out["text/html"]
    for text in ("COMPLETED", "Registered model main.quickstart.", "version 1", "TRAIN_UPDATED", "Eval generations by checkpoint"):  # the results card
        assert text in html, text
    assert "COMPLETED" in run_out["text/plain"]
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {})


def test_api_walkthrough(nb_home, tmp_path):
    nb = execute(nbformat.read(NOTEBOOKS / "api_walkthrough.ipynb", as_version=4), tmp_path, "api_walkthrough.ipynb")
    problems = "".join(text_of(o) for o in outputs(nb, find_cell(nb, "except InvalidInputError")))
    for field in ("train_data_path", "register_to", "training_duration"):
        assert field in problems
    continued = "".join(text_of(o) for o in outputs(nb, find_cell(nb, "custom_weights_path=str(latest)")))
    assert continued.strip().splitlines()[-1].startswith("COMPLETED |")  # (above it: follow=True's event lines)
    cancelled = "".join(text_of(o) for o in outputs(nb, find_cell(nb, "fm.iter_events(long)")))
    assert "cancelled 1 run" in cancelled and cancelled.strip().splitlines()[-1] == "STOPPED"


def test_monitoring_several_runs(nb_home, tmp_path):
    nb = execute(nbformat.read(NOTEBOOKS / "monitoring_several_runs.ipynb", as_version=4), tmp_path, "monitoring_several_runs.ipynb")
    finished = "".join(text_of(o) for o in outputs(nb, find_cell(nb, "m.wait(")))
    assert finished.count("'COMPLETED'") == 3
    # The monitors were displayed while their runs were queued; each display's snapshot was replaced
    # by the final one when its run ended (display ids), so the saved notebook shows how they ended.
    snapshots = [o for o in outputs(nb, find_cell(nb, "display(*monitors)")) if "text/html" in o.get("data", {})]
    assert len(snapshots) == 3
    for out in snapshots:
        assert "COMPLETED" in out["data"]["text/html"] and "TRAIN_FINISHED" in out["data"]["text/html"]
    table = outputs(nb, find_cell(nb, "pd.DataFrame(rows)"))[0]["data"]["text/plain"]
    assert table.count("main.sweep.") == 3


def test_reopening_the_monitor_in_a_new_kernel_loses_nothing(nb_home, tmp_path):
    """Kernel A starts a run and ends mid-run; kernel B opens a monitor by name: the whole history,
    sequence 1 onwards, and the run finished normally."""
    from tunedeck import foundation_model as fm

    setup = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4).cells[1].source  # tiny model + data
    first = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell(
            "import tunedeck\nfrom tunedeck import foundation_model as fm\n"
            "run = fm.create(model='tiny-chat', train_data_path=str(train), register_to='main.reopen', training_duration='60ba')\n"
            "monitor = tunedeck.monitor(run)\nmonitor"
        ),
        nbformat.v4.new_code_cell(
            "for event in fm.iter_events(run):\n    if event.type == 'TRAIN_UPDATED':\n        break\nprint(run.name)"
        ),
    ])
    execute(first, tmp_path)
    name = "".join(text_of(o) for o in outputs(first, 2)).strip()
    assert not fm.get(name).status.is_terminal()  # kernel A is gone, the run goes on

    second = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, tunedeck\nfrom tunedeck import foundation_model as fm\n"
        f"m = tunedeck.monitor({name!r})\n"
        "first_seen = [e['seq'] for e in m.history['events']]\n"
        "m.wait(timeout=600)\n"
        "print(json.dumps({'first_seen': first_seen, 'seqs': [e['seq'] for e in m.tracker.events],"
        " 'history': [e['seq'] for e in m.history['events']], 'status': m.summary['status'],"
        " 'steps': [e['data']['step'] for e in m.tracker.events if e['type'] == 'TRAIN_UPDATED'],"
        " 'points': len(m.tracker.metrics), 'service': len(fm.get_events(m.run_name))}))"
    )])
    execute(second, tmp_path, "reopened_monitor.ipynb")
    seen = json.loads("".join(text_of(o) for o in outputs(second, 0)))
    assert seen["first_seen"][0] == 1 and len(seen["first_seen"]) >= 3  # the history before kernel B existed
    assert seen["seqs"] == list(range(1, seen["service"] + 1))  # nothing lost, nothing twice
    assert seen["history"] == seen["seqs"]  # what a re-rendered view gets at once
    assert seen["status"] == "COMPLETED"
    assert seen["steps"] == sorted(seen["steps"]) and seen["steps"][-1] == 60  # training went on undisturbed
    assert seen["points"] >= len(seen["steps"])
