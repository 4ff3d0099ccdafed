"""``--defense pgn``: adversarial training with a perturbation generator network (the paper).

The classifier F and the generator G play the minimax game of eq. 4:

    min_theta max_phi  CE(F(x_adv), y) - c_L * ||delta||^2,   x_adv = eq. 5 of G(grad, x, y)

Each batch: the gradient input (``--pgn_grad``), G's perturbation, then one Adam step for each
network from its own tape, touching only its own variables.

``--pgn_update`` orders the two updates:
- ``simultaneous`` (default; the reference code's order): both gradients come from one forward
  pass of G and of F on x_adv; the classifier sees x_adv as a constant. Since F's weights do not
  enter x_adv (the gradient input is a constant), the classifier's gradient equals the one of a
  separate step on x_adv, and one forward pass serves both networks.
- ``alternating``: a generator step, then the classifier step on a fresh x_adv from the updated
  generator: one more forward pass of G and of F per batch.
Measured (README, "Choosing PGN's update order"): with ``--preset cpu`` on the CIFAR-10 JPEG copy
both orders reach the same benign accuracy (0.533 after 15 epochs, 2,000 test images), while a
simultaneous step costs 0.81x-0.90x an alternating one (benchmarks/step_time.py), so the
cheaper order, which is also the reference code's, is the default.

Not reproduced from the reference code: its classifier gradient also flows through x_adv into G's
gradient input (second order). Treating x_adv as a constant is the paper's eq. 4 as written and
much cheaper.
"""
from __future__ import annotations

import tensorflow as tf

from attacks.projection import l2_norm
from models.generator import GENERATOR_INPUTS, build_generator
from training.defenses.base import (Defense, accuracy, adversarial_training_loss, cross_entropy,
                                    make_optimizer, per_example_cross_entropy)
from training.distribute import global_batch_mean

# atanh(2x - 1) is infinite at x in {0, 1}: eq. 5 scales by this first, as the reference code.
ATANH_SCALE = 0.999999


def tanh_box_image(x, w):
    """Eq. 5: x_adv = (tanh(atanh((2x - 1) * 0.999999) + w) + 1) / 2, in (0, 1) with no clipping."""
    x = tf.cast(x, tf.float32)
    return (tf.tanh(tf.atanh((2.0 * x - 1.0) * ATANH_SCALE) + tf.cast(w, tf.float32)) + 1.0) / 2.0


def input_gradient(classifier, x, y, num_classes: int, kind: str = "prob"):
    """G's gradient input, a constant: d/dx of the (global) batch mean of F(x)_y (``prob``, the
    paper's and the reference code's choice) or of the cross-entropy (``loss``). Returns (grad, logits)."""
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(classifier(x, training=False), tf.float32)
        if kind == "prob":
            objective = global_batch_mean(tf.reduce_sum(tf.nn.softmax(logits) * tf.one_hot(y, num_classes), axis=-1))
        else:
            objective = global_batch_mean(per_example_cross_entropy(y, logits))
    return tf.stop_gradient(tape.gradient(objective, x)), tf.stop_gradient(logits)


def pgn_generator_loss(adv_ce, delta, c_l: float):
    """The generator's side of eq. 4 per example, minimised: -CE(F(x_adv), y) + c_L * ||delta||_2^2
    (its batch mean is the loss)."""
    return -adv_ce + c_l * tf.square(l2_norm(delta))


class PGNTraining(Defense):
    name = "pgn"

    def __init__(self, classifier, cfg, train, rng):
        super().__init__(classifier, cfg, train, rng)
        self.num_classes = int(classifier.output_shape[-1])
        self.inputs = tuple(key for key in GENERATOR_INPUTS if key in cfg.pgn_inputs.split(","))
        self.generator = build_generator(self.num_classes, classifier.input_shape[1:], self.inputs,
                                         cfg.gen_width)
        self.generator_optimizer = make_optimizer(train)

    @staticmethod
    def run_name(cfg):
        inputs = "" if cfg.pgn_inputs == ",".join(GENERATOR_INPUTS) else "-" + cfg.pgn_inputs.replace(",", "+")
        return f"pgn-cl{cfg.c_l:g}{inputs}"

    @property
    def networks(self):
        return {"classifier": self.classifier, "generator": self.generator}

    @property
    def optimizers(self):
        return {"classifier": self.optimizer, "generator": self.generator_optimizer}

    def _generate(self, generator, grad, x, y, training: bool):
        available = {"grad": grad, "image": x, "label": tf.one_hot(y, self.num_classes)}
        w = generator([available[key] for key in self.inputs], training=training)
        return tanh_box_image(x, w)

    def perturb(self, networks, x, y):
        grad, _ = input_gradient(networks["classifier"], x, y, self.num_classes, self.cfg.pgn_grad)
        return self._generate(networks["generator"], grad, x, y, training=False)

    def train_step(self, x, y):
        x = tf.cast(x, tf.float32)
        grad, clean_logits = input_gradient(self.classifier, x, y, self.num_classes, self.cfg.pgn_grad)
        if self.cfg.pgn_update == "simultaneous":
            metrics = self._simultaneous_step(x, y, grad)
        else:
            metrics = self._generator_update(x, y, grad)
            x_adv = tf.stop_gradient(self._generate(self.generator, grad, x, y, training=False))
            metrics.update(self.classifier_update(x, x_adv, y))
        metrics.setdefault("clean_loss", cross_entropy(y, clean_logits))
        metrics.setdefault("clean_acc", accuracy(y, clean_logits))
        metrics["fooled_rate"] = 1.0 - metrics["adv_acc"]
        return metrics

    def generator_step(self, x, y):
        """The generator's update alone against the current classifier (eq. 4's max over phi):
        PGN used as an attack on a fixed model (section 4.3, Figure 3)."""
        grad, _ = input_gradient(self.classifier, x, y, self.num_classes, self.cfg.pgn_grad)
        return self._generator_update(tf.cast(x, tf.float32), y, grad)

    def _generator_update(self, x, y, grad):
        variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            x_adv = self._generate(self.generator, grad, x, y, training=True)
            adv_ce = per_example_cross_entropy(y, self.classifier(x_adv, training=False))
            loss = pgn_generator_loss(adv_ce, x_adv - x, self.cfg.c_l)
            scaled = self.generator_optimizer.scale_loss(global_batch_mean(loss))
        grads = tape.gradient(scaled, variables)
        self.generator_optimizer.apply_gradients(zip(grads, variables))
        return {"generator_loss": tf.reduce_mean(loss)}

    def _simultaneous_step(self, x, y, grad):
        a = self.cfg.adv_coeff
        g_vars, c_vars = self.generator.trainable_variables, self.classifier.trainable_variables
        with tf.GradientTape() as g_tape, tf.GradientTape() as c_tape:
            x_adv = self._generate(self.generator, grad, x, y, training=True)
            adv_logits = self.classifier(x_adv, training=True)
            adv_ce = per_example_cross_entropy(y, adv_logits)
            delta = x_adv - x
            generator_loss = pgn_generator_loss(adv_ce, delta, self.cfg.c_l)
            clean_ce = tf.zeros_like(adv_ce)
            metrics = {}
            if a < 1.0:
                clean_logits = self.classifier(x, training=True)
                clean_ce = per_example_cross_entropy(y, clean_logits)
                metrics.update(clean_loss=tf.reduce_mean(clean_ce), clean_acc=accuracy(y, clean_logits))
            classifier_loss = adversarial_training_loss(clean_ce, adv_ce, a)
            g_scaled = self.generator_optimizer.scale_loss(global_batch_mean(generator_loss))
            c_scaled = self.optimizer.scale_loss(global_batch_mean(classifier_loss))
        # x_adv depends on theta only through the constant gradient input, so c_tape's gradient
        # is the classifier's gradient with x_adv held fixed. Both come from the weights before
        # either update.
        g_grads = g_tape.gradient(g_scaled, g_vars)
        c_grads = c_tape.gradient(c_scaled, c_vars)
        self.generator_optimizer.apply_gradients(zip(g_grads, g_vars))
        self.optimizer.apply_gradients(zip(c_grads, c_vars))
        metrics.update(loss=tf.reduce_mean(classifier_loss), generator_loss=tf.reduce_mean(generator_loss),
                       adv_loss=tf.reduce_mean(adv_ce), adv_acc=accuracy(y, adv_logits), delta_l2=l2_norm(delta))
        return metrics
