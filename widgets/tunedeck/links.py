"""``tunedeck.mlflow_url``: where a browser opens a run in MLflow's UI, served by the tunedeck service.

The URL carries the service's token once (the service answers with an HttpOnly, SameSite=strict
cookie), so it is for opening, not for saving in a notebook or sharing; the monitor's "Open in MLflow"
asks for it when clicked and never stores it.
"""

from __future__ import annotations

from tunedeck.types import TrainingRun


def run_fragment(experiment_id: str | None, run_id: str | None) -> str:
    """The MLflow UI's route for a run (or its experiment, or the experiments list)."""
    if experiment_id and run_id:
        return f"/experiments/{experiment_id}/runs/{run_id}"
    return f"/experiments/{experiment_id}" if experiment_id else ""


def mlflow_url(run: TrainingRun | str | None = None) -> str:
    """MLflow's UI on the service: ``run``'s page (a TrainingRun or its name), or the experiments list.

    Needs MLflow's server where the service runs (``pip install 'tunedeck[mlflow-ui]'``; the page says
    so otherwise).
    """
    from tunedeck.client import get_client

    client = get_client()
    if run is None:
        return client.mlflow_ui_url()
    record = client.get_run(run.name if isinstance(run, TrainingRun) else str(run))
    return client.mlflow_ui_url(run_fragment(record.mlflow_experiment_id, record.mlflow_run_id))
