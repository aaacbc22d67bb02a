"""Datasets as in-memory uint8 tensors, batch-level augmentation and deterministic batching.

Public names: `Dataset`, `load_dataset`, `augment_batch`, `cutout_batch`, `BatchIterator`,
`calibration_subset`, `stratified_indices` (plus `default_cache_dir` and `IMAGE_EXTENSIONS`).
"""

from hwnas.data.augment import augment_batch, cutout_batch
from hwnas.data.loader import BatchIterator, calibration_subset
from hwnas.data.sources import IMAGE_EXTENSIONS, Dataset, default_cache_dir, load_dataset, stratified_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "BatchIterator",
    "Dataset",
    "augment_batch",
    "calibration_subset",
    "cutout_batch",
    "default_cache_dir",
    "load_dataset",
    "stratified_indices",
]
