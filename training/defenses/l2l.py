"""``--defense l2l``: learning to defend by learning to attack (Jiang et al.; docs/methods.md section 3).

An attacker network A (``models/attacker.py``) replaces PGD's inner loop: it maps the image and
the classifier's input gradient to a perturbation in the eps-ball, and it is trained, like a GAN's
generator, to maximise the classifier's cross-entropy:

    classifier:  min_theta CE(F(x_adv), y)          (with --adv_coeff a: (1 - a) CE(x) + a CE(x_adv))
    attacker:    min_phi  -CE(F(x_adv), y),         x_adv = clip(x + delta(A(x, g)), 0, 1)

g is d/dx of the batch-mean cross-entropy, divided by ONE maximum of |g| over the whole batch
(the public code's ``grad / grad.abs().max()``), and is a constant input. ``--l2l_variant``:
- ``grad`` (Grad L2L, the default): A sees [x, g].
- ``two_step`` (2-step L2L): a second call of A on x1 = x_adv with g recomputed at x1;
  delta_total = delta1 + delta2 projected onto the ball (``attacks.projection``), then clipped to
  [0, 1]. The attacker's gradient flows through both calls (through delta1 and through x1, the
  second call's image input), not through the gradient inputs.
- ``naive``: A sees x only; no input gradient is computed.

``--l2l_norm`` picks the ball A's output is mapped into:
- ``inf`` (the public code): delta = eps * tanh(h).
- ``2`` (this project's threat model, the default): delta = eps * tanh(||h||_2) * h / ||h||_2 per
  example: the direction of h with length eps * tanh(||h||) < eps, smooth everywhere (it is
  eps * h to first order near h = 0, where the norm is floored as in ``clip_eta``). Unlike a
  projection it keeps a gradient for the length; unlike the public code's division by the RMS of
  h it cannot leave the ball.
x_adv = clip(x + delta, 0, 1) stays inside the ball, since clipping only moves x_adv towards x.

Each batch, as the public code: the classifier update first, with A frozen (called in inference
mode, the public code's ``attacker.eval()``: no weight or batch-norm statistic of A changes), then
ONE Adam step of A on the same batch, with g recomputed from the UPDATED classifier and a fresh
x_adv (A in training mode, F in inference mode). Two time scales: A's learning rate is
--attacker_lr (public default 1e-3), constant.

Not reproduced from the public code: its classifier optimiser (SGD, lr 0.1, momentum 0.9, weight
decay 2e-4, x0.1 at epochs 30 and 60) and the attackers' weight decay. The classifier uses this
project's Table 1 Adam (``make_optimizer``), so that defenses differ only in their attack; A uses
Adam(--attacker_lr), loss-scaled under mixed precision. A's filter counts are scaled by
--gen_width, the width of the project's learned perturbation network (PGN's generator), and
--l2l_attacker picks its size (models/attacker.py; default the public scripts' wide one).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from attacks.projection import SQUARED_NORM_FLOOR, clip_to_box, non_batch_axes, project
from models.attacker import build_attacker
from training.defenses.base import (Defense, accuracy, apply_gradients, cross_entropy, make_optimizer,
                                    per_example_cross_entropy, scaled_mean)
from training.distribute import global_max

# The gradient scale's floor: a batch whose input gradient vanishes gives g = 0, not NaN.
GRAD_MAX_FLOOR = 1e-12
VARIANT_INPUTS = {"grad": ("image", "grad"), "two_step": ("image", "grad"), "naive": ("image",)}


def scaled_loss_gradient(classifier, x, y):
    """A's gradient input, a constant: g = d/dx of the batch-mean CE divided by one max |g| over
    the whole batch, so that g is in [-1, 1]. Returns (g, logits of F(x))."""
    x = tf.stop_gradient(tf.cast(x, tf.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(classifier(x, training=False), tf.float32)
        loss = cross_entropy(y, logits)
    grad = tape.gradient(loss, x)  # the batch mean's 1/B cancels in the division below
    grad = grad / tf.maximum(global_max(tf.abs(grad)), GRAD_MAX_FLOOR)  # over the global batch
    return tf.stop_gradient(grad), tf.stop_gradient(logits)


def bounded_perturbation(h, norm: str, eps: float):
    """Maps A's unbounded output h smoothly into the eps-ball (float32).

    ``inf``: eps * tanh(h) (public code). ``2``: eps * tanh(||h||) * h / ||h|| per example.
    """
    h = tf.cast(h, tf.float32)
    if norm == "inf":
        return eps * tf.tanh(h)
    squared = tf.reduce_sum(tf.square(h), axis=non_batch_axes(h), keepdims=True)
    length = tf.sqrt(tf.maximum(squared, SQUARED_NORM_FLOOR))  # finite gradient at h = 0
    return eps * tf.tanh(length) * h / length


def l2l_attacker_loss(adv_ce):
    """The follower's problem, minimised: -CE(F(x_adv), y) (public code: ``loss_adv = -loss``)."""
    return -adv_ce


class L2LTraining(Defense):
    name = "l2l"

    def __init__(self, classifier, cfg, train, rng):
        super().__init__(classifier, cfg, train, rng)  # validates l2l_variant and l2l_norm (l2l_settings.py)
        self.inputs = VARIANT_INPUTS[cfg.l2l_variant]
        self.attacker = build_attacker(classifier.input_shape[1:], self.inputs, cfg.gen_width, size=cfg.l2l_attacker)
        self.attacker_optimizer = make_optimizer(train, cfg.attacker_lr)

    @staticmethod
    def run_name(cfg):
        size = "" if cfg.l2l_attacker == "wide" else f"-{cfg.l2l_attacker}"
        return f"l2l-{cfg.l2l_variant}{size}-l{cfg.l2l_norm}-eps{cfg.eps:g}"

    @property
    def networks(self):
        return {"classifier": self.classifier, "attacker": self.attacker}

    @property
    def optimizers(self):
        return {"classifier": self.optimizer, "attacker": self.attacker_optimizer}

    def attacker_delta(self, attacker, classifier, x, y, training: bool):
        """One call of A at x: (delta in the eps-ball, F(x)'s logits or None for naive L2L)."""
        logits = None
        features = [x]
        if "grad" in self.inputs:
            grad, logits = scaled_loss_gradient(classifier, x, y)
            features.append(grad)
        h = attacker(features, training=training)
        return bounded_perturbation(h, self.cfg.l2l_norm, self.cfg.eps), logits

    def adversarial(self, attacker, classifier, x, y, training: bool):
        """x_adv of the configured variant, differentiable in A's weights; also F(x)'s logits."""
        x = tf.cast(x, tf.float32)
        delta, logits = self.attacker_delta(attacker, classifier, x, y, training)
        x_adv = clip_to_box(x + delta, 0.0, 1.0)
        if self.cfg.l2l_variant == "two_step":
            # The second call sees x1 = x_adv (differentiable); its gradient input is recomputed at x1.
            delta2, _ = self.attacker_delta(attacker, classifier, x_adv, y, training)
            norm = np.inf if self.cfg.l2l_norm == "inf" else 2
            x_adv = project(x + delta + delta2, x, norm, self.cfg.eps, 0.0, 1.0)
        return x_adv, logits

    def perturb(self, networks, x, y):
        x_adv, _ = self.adversarial(networks["attacker"], networks["classifier"], x, y, training=False)
        return x_adv

    def train_step(self, x, y):
        x = tf.cast(x, tf.float32)
        x_adv, clean_logits = self.adversarial(self.attacker, self.classifier, x, y, training=False)
        metrics = self.classifier_update(x, tf.stop_gradient(x_adv), y)
        metrics.update(self.attacker_step(x, y))
        if clean_logits is None:  # naive L2L computes no input gradient: one forward pass for the log
            clean_logits = self.classifier(x, training=False)
        metrics.setdefault("clean_loss", cross_entropy(y, clean_logits))
        metrics.setdefault("clean_acc", accuracy(y, clean_logits))
        metrics["fooled_rate"] = 1.0 - metrics["adv_acc"]
        return metrics

    def attacker_step(self, x, y):
        """One Adam step of A against the current classifier, which stays fixed (the follower's
        problem); alone, it trains A as an attack on a fixed model."""
        x = tf.cast(x, tf.float32)
        with tf.GradientTape() as tape:
            x_adv, _ = self.adversarial(self.attacker, self.classifier, x, y, training=True)
            adv_ce = per_example_cross_entropy(y, self.classifier(x_adv, training=False))
            loss = l2l_attacker_loss(adv_ce)
            scaled = scaled_mean(self.attacker_optimizer, loss)
        apply_gradients(self.attacker_optimizer, tape, scaled, self.attacker.trainable_variables)
        return {"attacker_loss": tf.reduce_mean(loss)}
