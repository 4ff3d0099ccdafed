"""A Keras model a user hands to the Python API: does it take these images and return logits?

One check for ``eval.evaluate_model`` and ``training.train_model``, run on a few images before any
attack or training step, so that a wrong model fails in one line that says what to change instead
of deep inside Keras (whose messages print the whole input tensor).
"""
from __future__ import annotations

import numpy as np


def check_model(model, images: np.ndarray, labels: np.ndarray) -> int:
    """The number of classes ``model`` predicts, after checking that it takes ``images`` (float32 in
    [0, 1], a few) and returns logits [N, K] with K > every label; else a ValueError."""
    if not callable(model):
        raise ValueError(f"model must be a Keras model (or callable) mapping images in [0, 1] to logits, got "
                         f"{type(model).__name__}")
    _check_input_shape(model, images.shape[1:])
    try:
        logits = np.asarray(model(images, training=False), np.float32)
    except Exception as err:  # Keras's own message repeats the input tensor: keep its first line
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ValueError(f"the model cannot take images of shape {images.shape[1:]} ({type(err).__name__}: "
                         f"{first})") from None
    if logits.ndim != 2 or logits.shape[0] != len(images) or logits.shape[1] < 2:
        raise ValueError(f"the model must return logits [N, K] with K >= 2 classes, got shape {logits.shape}")
    if np.all(logits >= 0) and np.allclose(logits.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("the model returns probabilities (non-negative outputs that sum to 1): give it logits, "
                         "e.g. without its final softmax (attacks on probabilities underestimate robustness)")
    classes = int(logits.shape[1])
    if labels.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes - 1}] (the model has {classes} classes), got up to "
                         f"{int(labels.max())}")
    return classes


def _check_input_shape(model, shape: tuple) -> None:
    """A model that declares its input shape (functional, Sequential with an Input) against the
    images', before calling it: a grayscale image on a colour model is the common case."""
    try:
        declared = model.input_shape
    except (AttributeError, ValueError):  # subclassed or not yet built: the call decides
        return
    if not isinstance(declared, tuple) or len(declared) != len(shape) + 1 or isinstance(declared[0], tuple):
        return
    if any(d is not None and d != s for d, s in zip(declared[1:], shape)):
        fix = ""
        if declared[-1] == 3 and shape[-1] == 1:
            fix = ": grayscale images on a colour model? np.repeat(x, 3, axis=-1)"
        elif declared[-1] != shape[-1]:
            fix = f": give images with {declared[-1]} channel(s)"
        raise ValueError(f"the model takes images of shape {tuple(declared[1:])} but got {tuple(shape)}{fix}")
