"""Images and labels a user hands to the Python API (``eval.evaluate_model``, ``training.train_model``):
one rule for both, and each refusal a ValueError that names the problem and the fix.

Images are [N, H, W, C] with N >= 1, either uint8 (0-255, read as value / 255) or float in [0, 1],
with no NaN or infinity: the threat model's radius is in units of pixels in [0, 1], so an image's
scale is never guessed. Labels are N integers. Instead of the two arrays, a ``tf.data.Dataset`` of
(images, labels) batches (or of single (image, label) pairs) may be given.
"""
from __future__ import annotations

import numpy as np


def images_and_labels(x, y, what: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """(images, int64 labels) checked, from arrays ``x``, ``y`` or a tf.data.Dataset ``x`` (``y`` None).
    ``what`` names the images in messages ("x", "train_data"); images keep their dtype."""
    if hasattr(x, "as_numpy_iterator"):
        if y is not None:
            raise ValueError(f"{what} is a tf.data.Dataset of (images, labels): its labels come from it, so give "
                             "no separate labels (y=None)")
        x, y = _from_dataset(x, what)
    elif y is None:
        raise ValueError(f"{what} needs its labels: give (images, labels), or a tf.data.Dataset of (images, labels)")
    x, y = np.asarray(x), np.asarray(y)
    check_images(x, what)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        hint = " (one-hot? give y.argmax(-1))" if y.ndim == 2 else ""
        raise ValueError(f"{_labels(what)} must be integer labels of shape [N], got shape {y.shape} dtype "
                         f"{y.dtype}{hint}")
    if len(y) != len(x):
        raise ValueError(f"{what} has {len(x)} images but {_labels(what)} has {len(y)} labels")
    if y.min() < 0:
        raise ValueError(f"{_labels(what)} must be class indices >= 0, got {int(y.min())}")
    return x, y.astype(np.int64)


def check_images(x: np.ndarray, what: str = "x") -> None:
    """The one rule for images (module docstring)."""
    if x.ndim != 4:
        raise ValueError(f"{what} must be images [N, H, W, C], got shape {x.shape} (one image? add an axis: "
                         "x[None])")
    if len(x) == 0 or x.size == 0:
        raise ValueError(f"{what} holds no images (shape {x.shape}): give at least one")
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be uint8 images (0-255) or float images in [0, 1], got dtype {x.dtype}")
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{what} holds {bad} NaN or infinite pixel value(s): fix or drop those images")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got values from {low:g} to {high:g} (unnormalised? the "
                         "threat model is in pixels in [0, 1]: give uint8 images, or divide by 255, and normalise "
                         "inside the model)")


def as_float(x: np.ndarray) -> np.ndarray:
    """Checked images as float32 in [0, 1] (uint8 divided by 255)."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def as_uint8(x: np.ndarray, what: str = "x") -> np.ndarray:
    """Checked images as uint8, for a loop that keeps every dataset as uint8: float images must be
    multiples of 1/255 (8-bit images divided by 255), or they would change on the way."""
    if x.dtype == np.uint8:
        return x
    scaled = np.round(x.astype(np.float64) * 255.0)
    if np.abs(scaled - x * 255.0).max() > 1e-3:
        raise ValueError(f"{what}'s images are not multiples of 1/255: training keeps images as uint8, so give uint8 images "
                         "(or float images quantised to 8 bits)")
    return scaled.astype(np.uint8)


def _labels(what: str) -> str:
    return "y" if what == "x" else f"{what}'s labels"


def _from_dataset(dataset, what: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for element in dataset.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) != 2:
            raise ValueError(f"{what}: each element of the tf.data.Dataset must be an (images, labels) pair, got "
                             f"{type(element).__name__}")
        images, labels = np.asarray(element[0]), np.asarray(element[1])
        xs.append(images[None] if images.ndim == 3 else images)
        ys.append(np.atleast_1d(labels) if labels.ndim == 0 else labels)
    if not xs:
        raise ValueError(f"{what} is an empty tf.data.Dataset: give at least one (images, labels) batch")
    return np.concatenate(xs), np.concatenate(ys)
