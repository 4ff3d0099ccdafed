"""Two train steps of each defense, under the default strategy and under MirroredStrategy over
two logical CPU devices, from the same weights on the same global batches; prints one JSON line
per defense with both losses and the largest weight difference.

The optimizer is momentum SGD, whose update is linear in the gradient: Adam's first steps move
each weight by about +-lr whatever the size of its gradient, so a gradient that is ~0 up to float
rounding could flip a weight's move and hide whether the distributed step is right.

    python -m tests.distributed_equivalence none fgm pgd pgn l2l rvs

Run as its own process (tests/test_distribute.py does): the CPU can only be split before
TensorFlow starts its runtime.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training import distribute  # noqa: E402

REPLICAS = 2
distribute.split_cpu(REPLICAS)
# One strategy per process: collective ops of a second MirroredStrategy would share its keys.
MIRRORED = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])

import keras  # noqa: E402

from models import build_classifier  # noqa: E402
from training.config import DefenseConfig, TrainConfig  # noqa: E402
from training.defenses import make_defense  # noqa: E402
from training.ema import WeightEMA  # noqa: E402
from training.loop import compiled_train_step  # noqa: E402

BATCH, SIZE, CLASSES, WIDTH = 16, 32, 10, 0.125
SETTINGS = {"rvs": dict(eps=8 / 255), "pgn": dict(c_l=5.0)}


def build(name: str, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        step = tf.Variable(0, dtype=tf.int64, trainable=False)
        classifier = build_classifier(CLASSES, (SIZE, SIZE, 3), WIDTH)
        defense = make_defense(classifier, DefenseConfig(defense=name, gen_width=WIDTH, **SETTINGS.get(name, {})),
                               TrainConfig(lr=0.05, width=WIDTH, optimizer="sgd"), distribute.ReplicaNoise(7, step))
        defense.build()
        ema = WeightEMA(defense.networks, 0.9)
    return defense, ema, compiled_train_step(defense, ema, step, strategy)


def weights(defense, ema) -> list[np.ndarray]:
    models = list(defense.networks.values()) + list(ema.shadows.values())
    return [np.asarray(w) for model in models for w in model.get_weights()]


def compare(name: str) -> dict:
    rng = np.random.default_rng(0)
    batches = [(rng.uniform(0, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32),
                rng.integers(0, CLASSES, BATCH).astype(np.int32)) for _ in range(2)]
    single = build(name, tf.distribute.get_strategy())
    mirrored_strategy = MIRRORED
    mirrored = build(name, mirrored_strategy)
    for (defense, ema, _), source in ((mirrored, single),):  # the same starting weights
        for key, network in defense.networks.items():
            network.set_weights(source[0].networks[key].get_weights())
            ema.shadows[key].set_weights(source[1].shadows[key].get_weights())
    losses = {"default": [], "mirrored": []}
    for x, y in batches:
        losses["default"].append(float(single[2](tf.constant(x), tf.constant(y))["loss"]))
        dataset = mirrored_strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)))
        for xs, ys in dataset:
            losses["mirrored"].append(float(mirrored[2](xs, ys)["loss"]))
    a, b = weights(*single[:2]), weights(*mirrored[:2])
    changed = max(float(np.max(np.abs(w - w0))) for w, w0 in zip(a, weights(*build(name, tf.distribute.get_strategy())[:2])))
    return {"defense": name, "loss_default": losses["default"], "loss_mirrored": losses["mirrored"],
            "max_weight_difference": max(float(np.max(np.abs(u - v))) for u, v in zip(a, b)),
            "max_weight_change": changed, "replicas": mirrored_strategy.num_replicas_in_sync}


if __name__ == "__main__":
    for defense_name in sys.argv[1:]:
        print(json.dumps(compare(defense_name)), flush=True)
