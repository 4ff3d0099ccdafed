"""``--defense trades``: TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019).

The classifier minimises, per example,

    CE(F(x), y) + beta * KL(F(x) || F(x_adv))        (``trades_loss``; the paper's beta = 1/lambda)

where x_adv maximises the KL term inside the eps-ball (``kl_attack``): PGD on KL(F(x) || F(x'))
from the published start x' = x + 0.001 N(0, I) (the KL's gradient vanishes at x' = x), 10 steps
(``--trades_steps``), each projected onto the ball and onto [0, 1], with F in inference mode (the
published ``model.eval()``). Step size: L2 (the default, this project's threat model at eps 0.5)
2 eps / steps along the gradient over its L2 norm, the published L2 code's SGD step; L-inf
(``--trades_norm inf``, eps 8/255) 0.007 / 0.031 eps along the gradient's sign, the published
CIFAR-10 setting (step 0.007 at eps 0.031). beta is 6 (``--trades_beta``), the published CIFAR-10
value. The outer loss runs F in training mode on both x and x_adv, as published, and its gradient
flows through both F(x) and F(x_adv); x_adv itself is a constant. ``--adv_coeff`` does not apply:
TRADES's trade-off is beta.

``kl_attack`` is its own loop rather than ``attacks.pgd.projected_gradient_descent`` with a KL
loss: that PGD starts uniformly in the ball, floors the gradient's norm at CleverHans's 1e-6 (which
would stall here, where the KL's gradient near x is tiny) and takes integer labels, while TRADES's
inner maximisation starts at x + 0.001 N(0, I) and compares against F(x)'s distribution.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from attacks.projection import l2_norm, project
from training.defenses.base import (Defense, accuracy, apply_gradients, cross_entropy, per_example_cross_entropy,
                                    scaled_mean)

START_SCALE = 0.001          # the published start: x + 0.001 * N(0, I)
LINF_STEP_PER_EPS = 0.007 / 0.031  # the published L-inf step at eps 0.031
GRAD_NORM_FLOOR = 1e-12


def trades_kl(clean_logits, adv_logits) -> tf.Tensor:
    """Per example KL(softmax(clean) || softmax(adv)) over the classes, in float32."""
    clean = tf.nn.log_softmax(tf.cast(clean_logits, tf.float32))
    adv = tf.nn.log_softmax(tf.cast(adv_logits, tf.float32))
    return tf.reduce_sum(tf.exp(clean) * (clean - adv), axis=-1)


def trades_loss(clean_ce, kl, beta: float) -> tf.Tensor:
    """The TRADES training objective per example: CE(F(x), y) + beta * KL(F(x) || F(x_adv))."""
    return clean_ce + beta * kl


def step_size(norm: str, eps: float, steps: int) -> float:
    """The published step: L2 2 eps / steps; L-inf 0.007 / 0.031 eps (independent of the step count)."""
    return eps * LINF_STEP_PER_EPS if norm == "inf" else 2.0 * eps / steps


def kl_attack(logits_fn, x, clean_logits, start, *, eps: float, step: float, steps: int, norm: str) -> tf.Tensor:
    """x_adv maximising KL(softmax(clean_logits) || softmax(logits_fn(x_adv))) over the eps-ball around
    x and the box [0, 1]: ``steps`` ascent steps from ``start`` (one tf.while_loop, the whole batch)."""
    x = tf.cast(x, tf.float32)
    clean_logits = tf.stop_gradient(tf.cast(clean_logits, tf.float32))
    ord_ = np.inf if norm == "inf" else 2

    def body(i, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            kl = tf.reduce_sum(trades_kl(clean_logits, logits_fn(x_adv)))  # examples are independent
        grad = tape.gradient(kl, x_adv)
        if norm == "inf":
            direction = tf.sign(grad)
        else:  # no CleverHans floor of 1e-6: the KL's gradient near x is tiny and its direction is what counts
            direction = grad / tf.maximum(l2_norm(grad), GRAD_NORM_FLOOR)[:, None, None, None]
        return i + 1, project(x_adv + step * direction, x, ord_, eps, 0.0, 1.0)

    x0 = project(tf.cast(start, tf.float32), x, ord_, eps, 0.0, 1.0)
    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x0))
    return tf.stop_gradient(x_adv)


class TRADESTraining(Defense):
    name = "trades"

    @staticmethod
    def run_name(cfg):
        return f"trades-beta{cfg.trades_beta:g}-l{cfg.trades_norm}-eps{cfg.eps:g}"

    def perturb(self, networks, x, y):
        classifier = networks["classifier"]
        x = tf.cast(x, tf.float32)
        clean_logits = classifier(x, training=False)
        start = x + START_SCALE * self.rng.normal(tf.shape(x), dtype=tf.float32)
        cfg = self.cfg
        return kl_attack(lambda images: classifier(images, training=False), x, clean_logits, start, eps=cfg.eps,
                         step=step_size(cfg.trades_norm, cfg.eps, cfg.trades_steps), steps=cfg.trades_steps,
                         norm=cfg.trades_norm)

    def train_step(self, x, y):
        x = tf.cast(x, tf.float32)
        x_adv = self.perturb(self.networks, x, y)
        with tf.GradientTape() as tape:
            clean_logits = self.classifier(x, training=True)
            adv_logits = self.classifier(x_adv, training=True)
            clean_ce = per_example_cross_entropy(y, clean_logits)
            kl = trades_kl(clean_logits, adv_logits)
            loss = trades_loss(clean_ce, kl, self.cfg.trades_beta)
            scaled = scaled_mean(self.optimizer, loss)
        apply_gradients(self.optimizer, tape, scaled, self.classifier.trainable_variables)
        return {"loss": tf.reduce_mean(loss), "clean_loss": tf.reduce_mean(clean_ce),
                "clean_acc": accuracy(y, clean_logits), "kl_loss": tf.reduce_mean(kl),
                "adv_loss": cross_entropy(y, adv_logits), "adv_acc": accuracy(y, adv_logits),
                "delta_l2": l2_norm(x_adv - x)}
