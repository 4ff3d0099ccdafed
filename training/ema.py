"""Exponential moving average of the trained networks' weights (Table 1: decay 0.998).

The averaged weights are what the paper evaluates, so the shadows are whole Keras models:
evaluation and attacks call them exactly like the live networks. ``tf.train.
ExponentialMovingAverage`` keeps bare shadow variables instead, which would have to be swapped
into a model for every evaluation; Keras's optimizer-side ``use_ema`` overwrites the live
weights. Neither fits a loop that evaluates the average while training goes on.
"""
from __future__ import annotations

import keras
import tensorflow as tf


class WeightEMA:
    """Shadow copies of ``networks`` updated as s <- d * s + (1 - d) * w after every step.

    With ``warmup`` the decay is min(d, (1 + t) / (10 + t)) after t updates, the rule
    ``tf.train.ExponentialMovingAverage`` applies when given ``num_updates``: without it a short
    (CPU-sized) run evaluates mostly its random initialisation (0.998 forgets the start only
    after a few thousand steps). For a 200-epoch run the two rules differ only in the first
    epochs. All weights are averaged, non-trainable statistics (batch norm) included.
    """

    def __init__(self, networks: dict[str, keras.Model], decay: float, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")
        self.shadows: dict[str, keras.Model] = {}
        self._pairs = []
        for name, network in networks.items():
            shadow = keras.models.clone_model(network)
            shadow.set_weights(network.get_weights())
            self.shadows[name] = shadow
            self._pairs.extend(zip(shadow.weights, network.weights))

    def current_decay(self) -> tf.Tensor:
        if not self.warmup:
            return tf.constant(self.decay)
        t = tf.cast(self.num_updates, tf.float32)
        return tf.minimum(self.decay, (1.0 + t) / (10.0 + t))

    def update(self) -> None:
        decay = self.current_decay()
        for shadow, live in self._pairs:
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(live, shadow.dtype))
        self.num_updates.assign_add(1)
