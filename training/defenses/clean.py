"""``--defense none``: standard training on clean images, the paper's baseline."""
from __future__ import annotations

import tensorflow as tf

from training.defenses.base import Defense, accuracy, apply_gradients, per_example_cross_entropy, scaled_mean


class CleanTraining(Defense):
    name = "none"
    trains_on_attack = False

    def perturb(self, networks, x, y):
        return x

    def train_step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.classifier(x, training=True)
            per_example = per_example_cross_entropy(y, logits)
            scaled = scaled_mean(self.optimizer, per_example)
        apply_gradients(self.optimizer, tape, scaled, self.classifier.trainable_variables)
        loss = tf.reduce_mean(per_example)
        return {"loss": loss, "clean_loss": loss, "clean_acc": accuracy(y, logits)}
