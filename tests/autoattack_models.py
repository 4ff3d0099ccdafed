"""Tiny models with known answers for the AutoAttack tests (APGD, FAB-T, Square, AutoAttack).

Affine classifiers have closed-form minimal perturbations (the box ignored, which holds for
inputs in [0.4, 0.6] and the small radii used): for the predicted class y and any j != y,
L2: gap_j / ||w_y - w_j||_2, L-inf: gap_j / ||w_y - w_j||_1, minimised over j.
"""
from __future__ import annotations

import functools

import keras
import numpy as np

SHAPE = (4, 4, 3)
IMAGE_SHAPE = (8, 8, 3)


def affine_model(classes: int, seed: int = 0, shape=SHAPE, bias_scale: float = 0.1):
    """Flatten + Dense(classes) with known weights W [D, K] and bias b [K]."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    weights = rng.normal(size=(dim, classes)).astype(np.float32)
    bias = (bias_scale * rng.normal(size=classes)).astype(np.float32)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes)])
    model.layers[-1].set_weights([weights, bias])
    return model, weights, bias


def minimal_distance(x, weights, bias, norm):
    """Exact minimal L2 (norm=2) or L-inf (norm=np.inf) distance to misclassification, and the
    predicted labels."""
    logits = x.reshape(len(x), -1) @ weights + bias
    y = logits.argmax(1)
    gaps = logits[np.arange(len(x)), y][:, None] - logits
    order = 2 if norm == 2 else 1  # the dual norm of L-inf is L1
    normals = np.linalg.norm(weights[:, y].T[:, None, :] - weights.T[None], ord=order, axis=-1)
    distances = np.where(normals > 0, gaps / np.where(normals > 0, normals, 1.0), np.inf)
    return distances.min(1), y


def middle_of_box(n: int, shape=SHAPE, seed: int = 1):
    return np.random.default_rng(seed).uniform(0.4, 0.6, (n, *shape)).astype(np.float32)


def distances(x_adv, x, norm):
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return np.abs(delta).max(1) if norm == np.inf else np.linalg.norm(delta, axis=1)


def constant_model(classes: int = 4, shape=SHAPE):
    """Logits that ignore x: nothing can fool it."""
    bias = keras.initializers.Constant([3.0] + [0.0] * (classes - 1))
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                             keras.layers.Dense(classes, kernel_initializer="zeros", bias_initializer=bias)])


def synthetic_images(n: int, classes: int = 5, seed: int = 0, shape=IMAGE_SHAPE):
    """Noise plus one of `classes` fixed smooth patterns (the label): learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    coarse = np.random.default_rng(123).uniform(0, 1, (classes, shape[0] // 4, shape[1] // 4, shape[2]))
    patterns = np.kron(coarse, np.ones((1, 4, 4, 1)))
    y = rng.integers(0, classes, n)
    x = 0.75 * rng.uniform(0, 1, (n, *shape)) + 0.25 * patterns[y]
    return x.astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def small_cnn(classes: int = 5, epochs: int = 10, seed: int = 1, shape=IMAGE_SHAPE):
    """A conv net trained for a second or two on synthetic_images; cached per process."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(classes),
    ])
    x, y = synthetic_images(512, classes, shape=shape)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model
