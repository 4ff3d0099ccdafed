"""Datasets: loaded once into uint8 arrays, then served as deterministic tf.data batches.

    cfg = DataConfig(dataset="folder:../shared/data/cifar10-jpeg", train_limit=1000)
    ds = load_dataset(cfg)
    augment = resolve_augment(cfg.augment, ds.name)
    for epoch in range(epochs):
        for x, y in train_batches(ds.train_images, ds.train_labels, batch_size=128,
                                  seed=0, epoch=epoch, augment=augment):
            ...
"""
import importlib

from .dataset import (ARRAYS_PREFIX, AUGMENTATIONS, FOLDER_PREFIX, NPZ_PREFIX, TFDS_DATASETS, CorruptImageError,
                      DataConfig, Dataset, DatasetError)

# The loaders and the tf.data pipeline are imported on first use, not here, so that DataConfig
# (whose fields run.py makes flags of) is read without loading TensorFlow.
_LAZY = {"resolve_augment": "pipeline", "steps_per_epoch": "pipeline", "test_batches": "pipeline",
         "train_batches": "pipeline", "load_dataset": "sources", "load_npz": "npz"}


def __getattr__(name: str):
    if name in ("pipeline", "sources", "cache", "subsets", "npz"):
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ARRAYS_PREFIX",
    "AUGMENTATIONS",
    "CorruptImageError",
    "FOLDER_PREFIX",
    "NPZ_PREFIX",
    "TFDS_DATASETS",
    "DataConfig",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "load_npz",
    "resolve_augment",
    "steps_per_epoch",
    "test_batches",
    "train_batches",
]
