"""Recording (multi-process), the on-disk dataset format (docs/DATASET.md), window sampling, Minari import/export.

numpy only: nothing here imports torch. The engine and minari are imported only where used.
"""

from .dataset import Dataset, DatasetError, DatasetWriter, Episode, MultiDataset, open_dataset
from .windows import FlatData, WindowBatch, WindowSampler

__all__ = ["Dataset", "DatasetError", "DatasetWriter", "Episode", "FlatData", "MultiDataset", "WindowBatch",
           "WindowSampler", "open_dataset"]
