"""The widgets' public surface: tunedeck.form / monitor / runs, an honest __all__, a light import."""

from __future__ import annotations

import subprocess
import sys

import tunedeck
import tunedeck.ui
from tunedeck.types import RunStatus


def test_all_is_honest():
    for name in tunedeck.ui.__all__:
        assert hasattr(tunedeck.ui, name), name


def test_importing_the_widgets_loads_no_training_stack():
    code = "import sys, tunedeck.ui; print(' '.join(m for m in ('torch', 'transformers', 'mlflow', 'fastapi') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_top_level_helpers_make_the_widgets(fake, sent):
    fake.add_run("r1", status=RunStatus.COMPLETED)
    made = [tunedeck.form(model="tiny-chat"), tunedeck.monitor("r1"), tunedeck.runs()]
    try:
        assert [type(w).__name__ for w in made] == ["TrainingForm", "RunMonitor", "RunsBrowser"]
        assert tunedeck.monitor(fake.get_run("r1")).run_name == "r1"  # a TrainingRun or its name
    finally:
        for w in made:
            w.close()


def test_a_run_displays_as_its_monitor(fake, sent, monkeypatch):
    import IPython.display

    fake.add_run("r1", status=RunStatus.COMPLETED)
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    fake.get_run("r1")._ipython_display_()
    assert type(shown[0]).__name__ == "RunMonitor" and shown[0].run_name == "r1"
    shown[0].close()
