"""The config, error and in-memory dataset types that the rest of the project codes against."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from configs.settings import setting

TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped", "mnist")
FOLDER_PREFIX = "folder:"
NPZ_PREFIX = "npz:"  # a NumPy archive of arrays (data/npz.py)
ARRAYS_PREFIX = "arrays:"  # data given in Python (training.train_model): recorded by name, never loaded
AUGMENTATIONS = ("auto", "none", "shift", "flip_shift")
FOLDER_LAYOUT_HINT = "PATH/{train,test}/<class>/*.jpg"
NPZ_LAYOUT_HINT = "x_train, y_train, x_test, y_test (as keras.datasets gives them), optional label_names"


class DatasetError(ValueError):
    """Bad dataset input or data not available.

    str(err) is one line that names the problem and the fix, so that run.py can
    print it as is and exit instead of showing a traceback.
    """


class CorruptImageError(DatasetError):
    """An image file of a folder dataset that cannot be decoded; the message names the file."""


def dataset_choices() -> str:
    """The accepted --dataset values, in words, for error messages."""
    return (f"{', '.join(TFDS_DATASETS)}, {FOLDER_PREFIX}PATH with {FOLDER_LAYOUT_HINT}, or {NPZ_PREFIX}PATH "
            f"to a .npz with {NPZ_LAYOUT_HINT}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to augment it.

    Validated on construction so that bad flags fail before any slow work. Each field is a --flag.
    """

    # One of TFDS_DATASETS, "folder:PATH" or "npz:PATH"; not an enum flag, since a folder is any path.
    dataset: str = setting("cifar10", "cifar10, cifar100, svhn_cropped, mnist (tensorflow-datasets), folder:PATH "
                           "(PATH/{train,test}/<class>/*) or npz:PATH (x_train, y_train, x_test, y_test).")
    # None = tfds default (~/tensorflow_datasets)
    data_dir: str | None = setting(None, "tensorflow-datasets data_dir holding a prepared copy.", kind=str)
    train_limit: int = setting(0, "Train on a deterministic class-balanced subset of this size (0: all).")
    test_limit: int = setting(0, "Evaluate on a deterministic class-balanced subset of this size (0: all).")
    augment: str = setting("auto", "auto: random flip + 4 px shift for CIFAR and folders, shift only for digits.",
                           choices=AUGMENTATIONS)
    # A class with images in one split and none in the other is refused (accuracy would silently be
    # over fewer classes than the model predicts) unless this says it is intended.
    allow_missing_classes: bool = setting(False, "Train and evaluate although a class has images in one split and "
                                          "none in the other (refused otherwise: accuracy would be over fewer "
                                          "classes).")
    # Where the decoded-array cache lives (None: <data_dir>/decoded_cache). An InitVar, not a field:
    # the cache's place changes no pixel, so it stays out of dataclasses.fields/asdict and hence out
    # of a run's recorded settings and its resume check (training/rundir.flatten_settings). It is
    # kept as a plain attribute, so dataclasses.replace carries it over.
    cache_dir: dataclasses.InitVar[str | None] = setting(
        None, "Decoded-image cache folder (default <data_dir>/decoded_cache); not a setting.", kind=str)

    def __post_init__(self, cache_dir: str | None = None):
        object.__setattr__(self, "cache_dir", cache_dir)
        is_folder = self.dataset.startswith(FOLDER_PREFIX)
        is_npz = self.dataset.startswith(NPZ_PREFIX)
        if is_npz:
            if not self.dataset[len(NPZ_PREFIX):].strip():
                raise DatasetError(f"dataset {self.dataset!r} names no file: use {NPZ_PREFIX}PATH to a .npz with "
                                   f"{NPZ_LAYOUT_HINT}")
            # Absolute, as for folders: a run directory names its data wherever it is resumed from.
            archive = os.path.abspath(os.path.expanduser(self.dataset[len(NPZ_PREFIX):]))
            object.__setattr__(self, "dataset", NPZ_PREFIX + archive)
        elif not is_folder and self.dataset not in TFDS_DATASETS and not self.dataset.startswith(ARRAYS_PREFIX):
            raise DatasetError(
                f"unknown dataset {self.dataset!r}: choose one of {dataset_choices()}")
        if is_folder and not self.dataset[len(FOLDER_PREFIX):].strip():
            raise DatasetError(f"dataset {self.dataset!r} names no folder: use "
                               f"{FOLDER_PREFIX}PATH with {FOLDER_LAYOUT_HINT}")
        if is_folder:
            # Absolute, so that a run directory names its data wherever it is resumed or evaluated from.
            folder = os.path.abspath(os.path.expanduser(self.dataset[len(FOLDER_PREFIX):]))
            object.__setattr__(self, "dataset", FOLDER_PREFIX + folder)
        for field in ("train_limit", "test_limit"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DatasetError(f"{field}={value!r} is invalid: use 0 for the whole "
                                   "split or a positive number of examples")
        if self.augment not in AUGMENTATIONS:
            raise DatasetError(f"augment={self.augment!r} is invalid: choose one of "
                               f"{', '.join(AUGMENTATIONS)}")


# eq=False: the fields hold numpy arrays, whose == is elementwise, so a generated
# __eq__/__hash__ would raise; identity semantics are what callers need.
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Both splits of one dataset, decoded into memory as uint8.

    uint8 rather than float32 keeps CIFAR-10 at 180 MB instead of 720 MB; the
    pipeline converts each batch to float32 in [0, 1] on the fly.
    """

    name: str  # e.g. "cifar10" or "folder:/abs/path"
    train_images: np.ndarray = dataclasses.field(repr=False)  # uint8 [N, H, W, C]
    train_labels: np.ndarray = dataclasses.field(repr=False)  # int32 [N]
    test_images: np.ndarray = dataclasses.field(repr=False)  # uint8 [M, H, W, C]
    test_labels: np.ndarray = dataclasses.field(repr=False)  # int32 [M]
    num_classes: int
    class_names: tuple[str, ...]
    source: str  # human-readable provenance
    # Each example's id, so that another tool can find the same images: its index in the split as
    # tfds reads it, or for image folders its path relative to the folder root. None: the index.
    train_ids: np.ndarray | None = dataclasses.field(default=None, repr=False)
    test_ids: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        for split in ("train", "test"):
            if getattr(self, f"{split}_ids") is None:
                object.__setattr__(self, f"{split}_ids", np.arange(len(getattr(self, f"{split}_labels"))))
        # Checked here so that a hand-built Dataset (tests, other loaders) fails at
        # construction, not deep inside a tf.data pipeline.
        if len(self.class_names) != self.num_classes:
            raise DatasetError(f"{self.name}: {len(self.class_names)} class names for "
                               f"{self.num_classes} classes")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DatasetError(f"{self.name}: {split}_images must be uint8 "
                                   f"[N, H, W, C], got {images.dtype} {images.shape}")
            if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
                raise DatasetError(f"{self.name}: {split}_labels must be int32 "
                                   f"[{len(images)}], got {labels.dtype} {labels.shape}")
            if len(getattr(self, f"{split}_ids")) != len(labels):
                raise DatasetError(f"{self.name}: {len(getattr(self, f'{split}_ids'))} {split} ids for "
                                   f"{len(labels)} examples")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DatasetError(
                    f"{self.name}: {split}_labels outside [0, {self.num_classes})")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DatasetError(
                f"{self.name}: train images {self.train_images.shape[1:]} and test "
                f"images {self.test_images.shape[1:]} differ in shape")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(int(d) for d in self.train_images.shape[1:])

    def info(self) -> dict:
        """JSON-able summary for config.json and reports."""
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": int(self.num_classes),
            "image_shape": list(self.image_shape),
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
            "class_names": list(self.class_names),
        }
