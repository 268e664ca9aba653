"""``databricks.model_training.types.run_status``: RunStatus."""

from tunedeck.types import RunStatus

__all__ = ["RunStatus"]
