"""``databricks.model_training.types.common``: ObjectList (tunedeck's TunedeckList, a list) and
PaginatedObjectList (PaginatedList)."""

from tunedeck.types import PaginatedList, TunedeckList

ObjectList = TunedeckList
PaginatedObjectList = PaginatedList

__all__ = ["ObjectList", "PaginatedObjectList"]
