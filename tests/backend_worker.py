"""Runs AutoAttack on one tiny Keras model under the Keras backend this process was started with
(KERAS_BACKEND), for tests/test_backends.py: the model's weights and the images come from one seed,
so every backend attacks the same model on the same images.

    KERAS_BACKEND=jax python tests/backend_worker.py OUT.npz [IMPLEMENTATION]
"""
from __future__ import annotations

import sys

import keras
import numpy as np

SETTINGS = dict(eps=0.15, norm=2, batch_size=24, seed=0, attack_kwargs={
    "apgd-ce": dict(n_iter=10), "apgd-t": dict(n_iter=10, n_target_classes=2),
    "fab-t": dict(n_iter=10, n_target_classes=2), "square": dict(n_queries=100)})


def tiny_model_and_images(n=24):
    """A small CNN with seeded weights and n images; 4 labels wrong so some examples start misclassified."""
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    x = np.random.default_rng(1).uniform(size=(n, 8, 8, 3)).astype("float32")
    y = np.asarray(model(x)).argmax(-1)
    y[:4] = (y[:4] + 1) % 10
    return model, x, y


def main(out, implementation=None):
    import attacks

    model, x, y = tiny_model_and_images()
    result = attacks.autoattack(model, x, y, implementation=implementation, **SETTINGS)
    fgm = attacks.fast_gradient_method(model, x, 0.3, 2, clip_min=0.0, clip_max=1.0)
    np.savez(out, robust=result.robust, x_adv=result.x_adv, fgm=np.asarray(fgm),
             stages=np.array([result.robust_flags[k] for k in result.robust_flags]),
             passes=np.array(list(result.forward_passes.values())), implementation=result.implementation,
             tensorflow_loaded="tensorflow" in sys.modules, backend=keras.backend.backend())


if __name__ == "__main__":
    main(*sys.argv[1:])
