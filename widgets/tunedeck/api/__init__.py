"""Mirrors ``databricks.model_training.api`` so imports from it keep their shape: ``tunedeck.api.exceptions``."""
