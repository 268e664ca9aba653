"""The results card's state: what the monitor shows once a run has completed (ui/_results.py), and how the
monitor fills it (checkpoints read once, at the end) and prints it in its snapshots."""

from __future__ import annotations

from datetime import timedelta

from tunedeck.types import Checkpoint, RunStatus
from tunedeck.ui._results import generations_table, load_line, results_card
from tunedeck.ui.monitor import RunMonitor

from tests.ui.fakes import T0, FakeClient

SUMMARY = {
    "status": "COMPLETED", "registered_model_name": "main.demo.r1", "registered_model_version": 2,
    "experiment_path": "/Users/me/r1", "mlflow_experiment_id": "7", "mlflow_run_id": "abc123",
}


def checkpoint(batch: int, latest: bool = False) -> Checkpoint:
    return Checkpoint(f"ep{batch // 10}-ba{batch}", f"/runs/r1/checkpoints/ep{batch // 10}-ba{batch}", batch // 10, batch,
                      T0 + timedelta(seconds=batch), latest)


def gens(name: str, step: int, *pairs: tuple[str, str]) -> dict:
    return {"checkpoint": name, "step": step, "generations": [{"prompt": p, "generation": g} for p, g in pairs]}


def test_generations_side_by_side_one_column_per_checkpoint_by_step():
    table = generations_table([
        gens("ep2-ba20", 20, ("capital?", "Quillhaven is the capital."), ("who?", "Ada did.")),
        gens("ep1-ba10", 10, ("capital?", "Quill quill"), ("who?", "The has")),
        gens("ep3-ba30", 30, ("capital?", "first try")),
        gens("ep3-ba30", 30, ("capital?", "Quillhaven."), ("new prompt", "yes")),  # generated again after a resume
    ])
    assert table["checkpoints"] == ["ep1-ba10", "ep2-ba20", "ep3-ba30"]
    assert table["rows"] == [
        {"prompt": "capital?", "outputs": ["Quill quill", "Quillhaven is the capital.", "Quillhaven."]},
        {"prompt": "who?", "outputs": ["The has", "Ada did.", None]},  # the last checkpoint has none for it
        {"prompt": "new prompt", "outputs": [None, None, "yes"]},
    ]
    assert generations_table([]) == {"checkpoints": [], "rows": []}


def test_the_card_of_a_completed_run():
    card = results_card(SUMMARY, [checkpoint(20, latest=True), checkpoint(10)],
                        [gens("ep1-ba10", 10, ("q", "a1")), gens("ep2-ba20", 20, ("q", "a2"))])
    assert card["registered"] == {"name": "main.demo.r1", "version": 2, "load_line": load_line("main.demo.r1", 2)}
    assert 'tunedeck.registry.load_model("main.demo.r1", 2)' in card["registered"]["load_line"]
    assert card["mlflow"] == {"experiment_path": "/Users/me/r1", "experiment_id": "7", "run_id": "abc123",
                              "model_version": "main.demo.r1 version 2"}
    assert [c["name"] for c in card["checkpoints"]] == ["ep1-ba10", "ep2-ba20"]  # by step, whatever the order given
    assert card["checkpoints"][1]["is_latest"] and card["checkpoints"][1]["created_at"] == (T0 + timedelta(seconds=20)).isoformat()
    assert card["generations"]["rows"] == [{"prompt": "q", "outputs": ["a1", "a2"]}]
    # Try it asks the registered version first, then the checkpoints newest first
    assert card["try_targets"] == [
        {"value": "registered", "label": "registered version 2"},
        {"value": "ep2-ba20", "label": "checkpoint ep2-ba20 (latest)"},
        {"value": "ep1-ba10", "label": "checkpoint ep1-ba10"},
    ]


def test_no_card_before_completion_and_none_for_a_stopped_or_failed_run():
    for status in ("RUNNING", "STOPPED", "FAILED", None):
        assert results_card({**SUMMARY, "status": status}, [checkpoint(10)], []) == {}
    unregistered = results_card({"status": "COMPLETED"}, [checkpoint(10, latest=True)], [])
    assert unregistered["registered"] is None and unregistered["mlflow"]["model_version"] is None
    assert [t["value"] for t in unregistered["try_targets"]] == ["ep1-ba10"]


class CheckpointsClient(FakeClient):
    """The fake service, with checkpoints (the monitor reads them once the run completes)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, list[Checkpoint]] = {}

    def checkpoints(self, name: str) -> list[Checkpoint]:
        self.calls.append(("checkpoints", name))
        return list(self.saved.get(name, []))


def test_the_monitor_fills_the_card_when_the_run_completes_and_prints_it(home, monkeypatch):
    import tunedeck.client

    fake = CheckpointsClient()
    monkeypatch.setattr(tunedeck.client, "get_client", lambda: fake)
    monkeypatch.setattr(RunMonitor, "send", lambda self, content, buffers=None: None)
    fake.add_run("r1", mlflow_run_id="abc123", experiment_path="/Users/me/r1")
    fake.train_step("r1", 10, 20, 1.5)
    fake.emit("r1", "EVAL_GENERATIONS", "1 generation(s) at ep1-ba10", checkpoint="ep1-ba10", step=10,
              generations=[{"prompt": "capital?", "generation": "Quill <b>quill</b>"}])
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        assert mon.results == {}  # running: no card yet, no checkpoints read
        assert not [c for c in fake.calls if c[0] == "checkpoints"]

        fake.train_step("r1", 20, 20, 0.5)
        fake.emit("r1", "EVAL_GENERATIONS", "1 generation(s) at ep2-ba20", checkpoint="ep2-ba20", step=20,
                  generations=[{"prompt": "capital?", "generation": "Quillhaven is the capital."}])
        fake.emit("r1", "MODEL_REGISTERED", "registered main.demo.r1 version 1", name="main.demo.r1", version=1)
        fake.saved["r1"] = [checkpoint(10), checkpoint(20, latest=True)]
        fake.set_status("r1", RunStatus.COMPLETED)
        fake.emit("r1", "COMPLETED", "Completed")
        assert mon._poll() is False  # the end
        card = mon.results
        assert card["registered"]["name"] == "main.demo.r1" and card["registered"]["version"] == 1
        assert [c["name"] for c in card["checkpoints"]] == ["ep1-ba10", "ep2-ba20"]
        assert card["generations"] == {"checkpoints": ["ep1-ba10", "ep2-ba20"],
                                       "rows": [{"prompt": "capital?", "outputs": ["Quill <b>quill</b>", "Quillhaven is the capital."]}]}
        assert len([c for c in fake.calls if c[0] == "checkpoints"]) == 1

        html = mon._snapshot_html()
        assert "Eval generations by checkpoint" in html and "Quill &lt;b&gt;quill&lt;/b&gt;" in html  # text, not markup
        assert html.index("ep1-ba10") < html.index("ep2-ba20 (latest)") and "MLflow run abc123" in html
        text = mon._snapshot_text()
        assert "checkpoints: ep1-ba10, ep2-ba20 (latest)" in text and 'load_model("main.demo.r1", 1)' in text
    finally:
        mon.close()

    again = RunMonitor("r1")  # a monitor of an already completed run has its card from the start
    try:
        assert again.results == card
    finally:
        again.close()


def test_a_client_without_checkpoints_still_gets_a_card(fake, sent):
    fake.add_run("done", RunStatus.COMPLETED, registered_model_name="main.demo.done", registered_model_version=3)
    mon = RunMonitor("done")
    try:
        assert mon.results["registered"]["version"] == 3 and mon.results["checkpoints"] == []
        assert [t["value"] for t in mon.results["try_targets"]] == ["registered"]
    finally:
        mon.close()


def test_try_it_reports_a_refused_prompt_in_the_box(fake, sent):
    from tunedeck.errors import InvalidInputError, Problem

    def refuse(name, prompt, checkpoint=None, **options):
        raise InvalidInputError([Problem("prompt", "is empty: type something for the model to answer")])

    fake.add_run("done", RunStatus.COMPLETED, registered_model_name="main.demo.done", registered_model_version=3)
    fake.generate = refuse
    mon = RunMonitor("done")
    try:
        mon._on_view_message(mon, {"kind": "try", "prompt": " ", "checkpoint": "registered", "max_new_tokens": 5}, None)
        mon._try_thread.join(30)
        assert mon.tryit["state"] == "error" and mon.tryit["note"] == "prompt: is empty: type something for the model to answer"
        assert mon.tryit["prompt"] == " " and mon.tryit["checkpoint"] == "registered"
    finally:
        mon.close()


def test_open_in_mlflow_sends_the_run_page_to_the_view_that_asked_and_keeps_no_token(home, monkeypatch):
    """The URL carries the service's token: it goes to the asking view in a message, never into the
    widget's synced state (which a saved notebook keeps)."""
    import tunedeck.client

    class LinkClient(CheckpointsClient):
        def mlflow_ui_url(self, fragment: str = "") -> str:
            return "http://127.0.0.1:9/mlflow/?token=SECRET" + (f"#{fragment}" if fragment else "")

    fake = LinkClient()
    sent: list[dict] = []
    monkeypatch.setattr(tunedeck.client, "get_client", lambda: fake)
    monkeypatch.setattr(RunMonitor, "send", lambda self, content, buffers=None: sent.append(content))
    fake.add_run("r1", RunStatus.COMPLETED, mlflow_experiment_id="7", mlflow_run_id="abc123", experiment_path="/Users/me/r1")
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        mon._on_view_message(mon, {"kind": "open-mlflow", "view": "v2"}, None)
        assert sent[-1] == {"kind": "open", "view": "v2", "url": "http://127.0.0.1:9/mlflow/?token=SECRET#/experiments/7/runs/abc123"}
        state = mon.get_state()
        assert "SECRET" not in repr(state)
    finally:
        mon.close()
