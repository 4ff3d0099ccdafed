"""Small helpers shared by the tests of the learned-attacker defenses (PGN, L2L, RvS)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def color_data(n: int, size: int = 16, classes: int = 3, seed: int = 0):
    """n images whose class is a brighter colour channel: separable, but not trivially so."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(0, 0.5, (n, size, size, 3)).astype(np.float32)
    x[np.arange(n), :, :, y] += 0.25
    return tf.constant(x), tf.constant(y, tf.int32)


def weights(model, trainable: bool = True) -> list[np.ndarray]:
    return [v.numpy().copy() for v in (model.trainable_variables if trainable else model.weights)]


def changed(before, model, trainable: bool = True) -> bool:
    now = model.trainable_variables if trainable else model.weights
    return any(not np.array_equal(a, b.numpy()) for a, b in zip(before, now))
