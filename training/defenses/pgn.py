"""``--defense pgn``: adversarial training with a perturbation generator network (the paper).

The classifier F and the generator G play the minimax game of eq. 4:

    min_theta max_phi  CE(F(x_adv), y) - c_L * ||delta||^2,   x_adv = eq. 5 of G(grad_x F(x; theta), x, y)

Each batch: the gradient input (``--pgn_grad``, ``--pgn_grad_scale``), G's perturbation, then one
Adam step for each network from its own tape, touching only its own variables.

``--pgn_update`` orders the two updates:
- ``simultaneous`` (default; the reference code's order): both gradients come from one forward
  pass of G and of F on x_adv, from the weights before either update.
- ``alternating``: a generator step, then the classifier step on a fresh x_adv from the updated
  generator: one more forward pass of G and of F per batch.
Measured (docs/defenses.md, "Choosing PGN's update order"): with ``--preset cpu`` on the CIFAR-10 JPEG copy
both orders reach the same benign accuracy (0.533 after 15 epochs, 2,000 test images), while a
simultaneous step costs 0.81x-0.90x an alternating one (benchmarks/step_time.py), so the
cheaper order, which is also the reference code's, is the default.

``--pgn_classifier_grad``: eq. 4 has grad_x F(x; theta) inside the min over theta, so as written
F's gradient also flows through G's gradient input (a second-order term); the reference code
(ATPGN/ATPGN ``models/PGN.py``, no stop_gradient) does this: ``through_input_gradient``. The default
``fixed`` holds x_adv constant in F's update, the cheaper first-order approximation: on the
CIFAR-10 JPEG copy (width 0.25, 10k images, 6 epochs) the extra term was 2-5e-4 of the first-order
gradient, the two trained to the same CW-L2 distance within 0.004, and the second-order step costs
1.5x (docs/methods.md section 6).

``--pgn_grad_scale``: the paper's and reference code's gradient input is d/dx of the *batch mean*
of F(x)_y (``batch_mean``), so each example's gradient carries a 1/B factor (per-pixel RMS 2.5e-5 at
B = 128) and G learned to ignore it at CPU scale. ``per_example`` drops the 1/B (the gradient of
F(x_i)_y_i itself); ``unit`` feeds g_i / ||g_i||_2 (beyond the paper; L2L normalises its gradient
input for the same reason). ``monitor`` measures whether G uses the gradient: how far x_adv moves
when the gradient input is zeroed.

``--gen_init``: G's kernel initialiser; Keras's glorot_uniform by default, the reference's he_normal
(Keras's, a truncated normal) as an option: it gave about twice the initial perturbation and did not
change the result at CPU scale (docs/methods.md section 6).
"""
from __future__ import annotations

import tensorflow as tf

from attacks.projection import l2_norm
from models.generator import GENERATOR_INPUTS, build_generator
from training.defenses.base import (Defense, accuracy, apply_gradients, cross_entropy, make_optimizer,
                                    per_example_cross_entropy, scaled_mean)
from training.distribute import global_batch_mean

# atanh(2x - 1) is infinite at x in {0, 1}: eq. 5 scales by this first, as the reference code.
ATANH_SCALE = 0.999999


def tanh_box_image(x, w):
    """Eq. 5: x_adv = (tanh(atanh((2x - 1) * 0.999999) + w) + 1) / 2, in (0, 1) with no clipping."""
    x = tf.cast(x, tf.float32)
    return (tf.tanh(tf.atanh((2.0 * x - 1.0) * ATANH_SCALE) + tf.cast(w, tf.float32)) + 1.0) / 2.0


def input_gradient(classifier, x, y, num_classes: int, kind: str = "prob", scale: str = "batch_mean",
                   constant: bool = True):
    """G's gradient input and the clean logits: d/dx of F(x)_y (``prob``, the paper's and the
    reference code's choice) or of the cross-entropy (``loss``), scaled as ``scale`` says:
    ``batch_mean`` differentiates the (global) batch mean, so each example's gradient is 1/B of its
    own; ``per_example`` is each example's own; ``unit`` is that over its L2 norm.

    ``constant`` stops the gradient; ``False`` keeps grad_x F(x; theta) differentiable in theta (the
    reference code's second-order path), for a caller whose tape is recording."""
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(classifier(x, training=False), tf.float32)
        if kind == "prob":
            per_example = tf.reduce_sum(tf.nn.softmax(logits) * tf.one_hot(y, num_classes), axis=-1)
        else:
            per_example = per_example_cross_entropy(y, logits)
        objective = global_batch_mean(per_example) if scale == "batch_mean" else tf.reduce_sum(per_example)
    grad = tape.gradient(objective, x)
    if scale == "unit":
        grad = grad / tf.maximum(l2_norm(grad), 1e-12)[:, None, None, None]
    if constant:
        grad = tf.stop_gradient(grad)
    return grad, tf.stop_gradient(logits)


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
                                         cfg.gen_width, kernel_initializer=cfg.gen_init)
        self.generator_optimizer = make_optimizer(train)

    @staticmethod
    def run_name(cfg):
        inputs = "" if cfg.pgn_inputs == ",".join(GENERATOR_INPUTS) else "-" + cfg.pgn_inputs.replace(",", "+")
        scale = "" if cfg.pgn_grad_scale == "batch_mean" else f"-{cfg.pgn_grad_scale}"
        order = "" if cfg.pgn_classifier_grad == "fixed" else "-2nd"
        return f"pgn-cl{cfg.c_l:g}{inputs}{scale}{order}"

    @property
    def networks(self):
        return {"classifier": self.classifier, "generator": self.generator}

    @property
    def optimizers(self):
        return {"classifier": self.optimizer, "generator": self.generator_optimizer}

    def _input_gradient(self, classifier, x, y, constant=True):
        return input_gradient(classifier, x, y, self.num_classes, self.cfg.pgn_grad, self.cfg.pgn_grad_scale,
                              constant)

    def _generate(self, generator, grad, x, y, training: bool):
        available = {"grad": grad, "image": x, "label": tf.one_hot(y, self.num_classes)}
        w = generator([available[key] for key in self.inputs], training=training)
        return tanh_box_image(x, w)

    def perturb(self, networks, x, y):
        grad, _ = self._input_gradient(networks["classifier"], x, y)
        return self._generate(networks["generator"], grad, x, y, training=False)

    def monitor(self, networks, x, y, x_adv):
        """Whether G uses its gradient input: ||x_adv - x_adv(grad = 0)||_2 against ||x_adv - x||_2,
        and the gradient input's per-pixel RMS."""
        if "grad" not in self.inputs:
            return {}
        grad, _ = self._input_gradient(networks["classifier"], x, y)
        without = self._generate(networks["generator"], tf.zeros_like(grad), x, y, training=False)
        return {"grad_input_rms": tf.sqrt(tf.reduce_mean(tf.square(grad))),
                "zeroed_grad_shift_l2": tf.reduce_mean(l2_norm(x_adv - without))}

    def train_step(self, x, y):
        x = tf.cast(x, tf.float32)
        if self.cfg.pgn_update == "simultaneous":
            metrics = self._simultaneous_step(x, y)
        else:
            grad, clean_logits = self._input_gradient(self.classifier, x, y)
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
        grad, _ = self._input_gradient(self.classifier, x, y)
        return self._generator_update(tf.cast(x, tf.float32), y, grad)

    def _generator_update(self, x, y, grad):
        with tf.GradientTape() as tape:
            x_adv = self._generate(self.generator, grad, x, y, training=True)
            adv_ce = per_example_cross_entropy(y, self.classifier(x_adv, training=False))
            loss = pgn_generator_loss(adv_ce, x_adv - x, self.cfg.c_l)
            scaled = scaled_mean(self.generator_optimizer, loss)
        apply_gradients(self.generator_optimizer, tape, scaled, self.generator.trainable_variables)
        return {"generator_loss": tf.reduce_mean(loss)}

    def simultaneous_gradients(self, x, y):
        """Both networks' gradients from one forward pass, before either update: (generator
        gradients, classifier gradients, scaled losses, metrics). With ``--pgn_classifier_grad
        fixed`` G's gradient input is a constant, so the classifier's gradient is the one of a
        separate step on a fixed x_adv; with ``through_input_gradient`` it also has the term through
        grad_x F(x; theta)."""
        second_order = self.cfg.pgn_classifier_grad == "through_input_gradient"
        with tf.GradientTape() as g_tape, tf.GradientTape() as c_tape:
            grad, clean_logits = self._input_gradient(self.classifier, x, y, constant=not second_order)
            x_adv = self._generate(self.generator, grad, x, y, training=True)
            classifier_loss, adv_ce, metrics = self.classifier_objective(x, x_adv, y)
            delta = x_adv - x
            generator_loss = pgn_generator_loss(adv_ce, delta, self.cfg.c_l)
            g_scaled = scaled_mean(self.generator_optimizer, generator_loss)
            c_scaled = scaled_mean(self.optimizer, classifier_loss)
        g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        c_grads = c_tape.gradient(c_scaled, self.classifier.trainable_variables)
        metrics.setdefault("clean_loss", cross_entropy(y, clean_logits))
        metrics.setdefault("clean_acc", accuracy(y, clean_logits))
        metrics.update(generator_loss=tf.reduce_mean(generator_loss), delta_l2=l2_norm(delta))
        return g_grads, c_grads, metrics

    def _simultaneous_step(self, x, y):
        g_grads, c_grads, metrics = self.simultaneous_gradients(x, y)
        self.generator_optimizer.apply_gradients(zip(g_grads, self.generator.trainable_variables))
        self.optimizer.apply_gradients(zip(c_grads, self.classifier.trainable_variables))
        return metrics
