"""Load a registered model back from the MLflow registry (the service's default store, or MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from pathlib import Path

from tunedeck import config


def model_version_path(name: str, version: int | str | None = None) -> Path:
    """Local folder of a registered model version (the latest when version is None), in Hugging Face format."""
    import mlflow
    from mlflow import MlflowClient

    uri = config.mlflow_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise LookupError(f"no registered model named {name!r} in {uri}")
        version = max(int(v.version) for v in versions)
    mv = client.get_model_version(name, str(version))
    mlflow.set_tracking_uri(uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source))


def load_model(name: str, version: int | str | None = None):
    """(model, tokenizer) of a registered model version, ready for ``generate``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_version_path(name, version)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
