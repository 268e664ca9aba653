"""``databricks.model_training.types.training_run``: TrainingRun, TrainingEvent."""

from tunedeck.types import TrainingEvent, TrainingRun

__all__ = ["TrainingEvent", "TrainingRun"]
