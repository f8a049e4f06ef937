"""The ``folk_measures`` TFDS dataset (see folk_measures_dataset_builder.py)."""

from .folk_measures_dataset_builder import Builder, FolkMeasuresConfig

__all__ = ["Builder", "FolkMeasuresConfig"]
