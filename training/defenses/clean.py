"""``--defense none``: standard training on clean images, the paper's baseline."""
from __future__ import annotations

import tensorflow as tf

from training.defenses.base import Defense, accuracy, per_example_cross_entropy
from training.distribute import global_batch_mean


class CleanTraining(Defense):
    name = "none"
    trains_on_attack = False

    def perturb(self, networks, x, y):
        return x

    def train_step(self, x, y):
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(x, training=True)
            per_example = per_example_cross_entropy(y, logits)
            scaled_loss = self.optimizer.scale_loss(global_batch_mean(per_example))
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        loss = tf.reduce_mean(per_example)
        return {"loss": loss, "clean_loss": loss, "clean_acc": accuracy(y, logits)}
