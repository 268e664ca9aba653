"""A script written for the reference client runs on a real tunedeck service with only its imports changed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.helpers import PAIRS, write_jsonl

from tunedeck.inputs.paths import local_path

pytestmark = pytest.mark.e2e

# Written against databricks-genai 1.1.8; the test replaces "databricks.model_training" by "tunedeck".
REFERENCE_SCRIPT = '''
from databricks.model_training import foundation_model as fm
from databricks.model_training.types import TrainingRun
from databricks.model_training.types.run_status import RunStatus
from databricks.model_training.api.exceptions import DatabricksGenAIResponseError

print(fm.get_models().to_pandas()[["display_name", "name", "max_context_length"]])

run = fm.create(
    model="tiny-llama",
    train_data_path="dbfs:/Volumes/main/ref/data/train.jsonl",
    register_to="main.ref",
    task_type="INSTRUCTION_FINETUNE",
    training_duration="6ba",
)
assert isinstance(run, TrainingRun) and run.status.before(RunStatus.RUNNING)

events = fm.get_events(training_run=run, follow=True)
assert events[-1].is_terminal_state() and events[-1].type == "COMPLETED", events[-1].message

run = fm.get(training_run=run.name)
assert run.status == RunStatus.COMPLETED and run.status.is_terminal() and run.status.after(RunStatus.RUNNING)
# the values the run used, defaults included
assert run.learning_rate > 0 and run.context_length > 0 and run.training_duration == "6ba", run
assert run.submitted_config.learning_rate == run.learning_rate
assert run.experiment_id and run.run_id and run.save_folder
assert [e.type for e in run.events][-1] == "COMPLETED"

listed = fm.list(experiment_id=run.experiment_id, statuses=[RunStatus.COMPLETED], limit=1)
assert [r.name for r in listed] == [run.name] and not listed.has_next_page
print(fm.list().to_pandas()[["name", "run_progress", "model", "learning_rate", "training_duration"]])

checkpoints = fm.get_checkpoints(run)
assert checkpoints and all(isinstance(path, str) for path in checkpoints), checkpoints

more = fm.create(
    model="tiny-llama",
    train_data_path="dbfs:/Volumes/main/ref/data/train.jsonl",
    register_to="main.ref",
    task_type="INSTRUCTION_FINETUNE",
    custom_weights_path=checkpoints[-1],
    training_duration="100000ba",
)
assert fm.cancel(runs=[more]) == 1
assert fm.get(more).status in (RunStatus.TERMINATING, RunStatus.STOPPED)
assert more.cancel() in (0, 1)  # already stopping: the reference counts it only if still active

try:
    fm.get("no-such-run")
except DatabricksGenAIResponseError as err:
    print("not found:", err)
else:
    raise AssertionError("get() of an unknown run did not raise")
print("REFERENCE SCRIPT OK")
'''


def test_a_reference_script_runs_with_only_its_imports_changed(e2e_home):
    write_jsonl(local_path("dbfs:/Volumes/main/ref/data/train.jsonl"),
                [{"prompt": p + "\n", "response": r} for p, r in PAIRS])
    script = REFERENCE_SCRIPT.replace("databricks.model_training", "tunedeck")
    assert script.count("tunedeck") == 4 and "databricks" not in script
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "REFERENCE SCRIPT OK" in done.stdout and "not found:" in done.stdout
