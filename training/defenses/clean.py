"""``--defense none``: standard training on clean images, the paper's baseline."""
from __future__ import annotations

import tensorflow as tf

from training.defenses.base import Defense, accuracy, cross_entropy


class CleanTraining(Defense):
    name = "none"

    def perturb(self, networks, x, y):
        return x

    def train_step(self, x, y):
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(x, training=True)
            loss = cross_entropy(y, logits)
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss, "clean_loss": loss, "clean_acc": accuracy(y, logits)}
