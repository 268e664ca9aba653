"""``databricks.model_training.types.training_constants``: TrainingModelConstants (tunedeck's ModelInfo),
TrainingConstants."""

from tunedeck.types import TrainingConstants, TrainingModelConstants

__all__ = ["TrainingConstants", "TrainingModelConstants"]
