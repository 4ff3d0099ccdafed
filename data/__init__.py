"""Datasets: loaded once into uint8 arrays, then served as deterministic tf.data batches.

    cfg = DataConfig(dataset="folder:../shared/data/cifar10-jpeg", train_limit=1000)
    ds = load_dataset(cfg)
    augment = resolve_augment(cfg.augment, ds.name)
    for epoch in range(epochs):
        for x, y in train_batches(ds.train_images, ds.train_labels, batch_size=128,
                                  seed=0, epoch=epoch, augment=augment):
            ...
"""

from .dataset import (ARRAYS_PREFIX, AUGMENTATIONS, FOLDER_PREFIX, TFDS_DATASETS, CorruptImageError, DataConfig,
                      Dataset, DatasetError)
from .pipeline import resolve_augment, steps_per_epoch, test_batches, train_batches
from .sources import load_dataset

__all__ = [
    "ARRAYS_PREFIX",
    "AUGMENTATIONS",
    "CorruptImageError",
    "FOLDER_PREFIX",
    "TFDS_DATASETS",
    "DataConfig",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "resolve_augment",
    "steps_per_epoch",
    "test_batches",
    "train_batches",
]
