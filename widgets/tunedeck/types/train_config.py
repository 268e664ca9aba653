"""``databricks.model_training.types.train_config``: TrainConfig (what ``run.submitted_config`` is)."""

from tunedeck.types import TrainConfig

__all__ = ["TrainConfig"]
