"""``databricks.model_training.api.exceptions``: see tunedeck.exceptions."""

from tunedeck.exceptions import *  # noqa: F403
from tunedeck.exceptions import __all__  # noqa: F401
