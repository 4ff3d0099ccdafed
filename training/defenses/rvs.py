"""``--defense rvs``: robustness via synthesis (Baytas & Deb; docs/methods.md section 4).

A generator G turns noise z ~ N(0, I) into a perturbation; no gradient of the classifier F is
used to craft it. Per example (``synthesize``):

    delta = clip_eta(G(z))                   inside the eps-ball (``--rvs_norm``, ``--eps``)
    x0    = clip(x + U(eps-ball), 0, 1)      a random start
    x_adv = project(x0 + delta, x)           back onto the eps-ball around x, then [0, 1]

The two players share one objective, the entropic OT distance between the batch's natural and
adversarial penultimate features (``training/optimal_transport.py``): G maximises it; F minimises
CE(F(x_adv), smoothed y) + ot_weight * OT. Each batch: one momentum-SGD step for G, then one step
for F on a fresh z and random start, each from its own tape, touching only its own variables.

As the public code (ALLab-Boun/robustness-via-synthesis): G's batch norm uses batch statistics in
both steps (the public graph is built in train mode), so F trains on perturbations from the same
distribution G was optimised under; ``perturb`` (monitoring, EMA weights) uses the moving averages.
Not reproduced: the public code's weight decay (this project's Table 1 has none) and its
momentum-SGD classifier (F uses the project's optimizer, ``make_optimizer``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from attacks.projection import clip_eta, l2_norm, project, random_lp_vector
from models.classifier import with_features
from models.noise_generator import build_noise_generator
from training.defenses.base import Defense, accuracy, apply_gradients, cross_entropy, make_optimizer
from training.distribute import gather_batch, global_batch_mean, replica_share
from training.optimal_transport import sinkhorn_cost

GENERATOR_MOMENTUM = 0.9  # the public code's momentum for both players
OT_EPSILON = 0.01         # entropic regularisation (section 4)
OT_ITERATIONS = 100


def smoothed_labels(labels, num_classes: int, smoothing: float) -> tf.Tensor:
    """Section 4's smoothed targets as the public code writes them: 1 - s on the true class and
    s / (K - 1) on each other one (Keras's ``label_smoothing`` would give 1 - s + s/K and s/K)."""
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    return (1.0 - smoothing) * one_hot + smoothing / (num_classes - 1) * (1.0 - one_hot)


def smoothed_cross_entropy(labels, logits, *, num_classes: int, label_smoothing: float) -> tf.Tensor:
    """Per-example CE(F(x_adv), smoothed y), in float32 under mixed precision."""
    return tf.nn.softmax_cross_entropy_with_logits(
        labels=smoothed_labels(labels, num_classes, label_smoothing), logits=tf.cast(logits, tf.float32))


def rvs_classifier_loss(smoothed_ce, ot_distance, *, ot_weight: float) -> tf.Tensor:
    """Section 4's classifier loss: CE(F(x_adv), smoothed y) + ot_weight * OT(f(x), f(x_adv)).

    Per replica (``training/distribute.py``): its share of the global batch's mean CE, plus its
    share of the OT distance, which every replica computes over the whole gathered batch."""
    return global_batch_mean(smoothed_ce) + ot_weight * replica_share(ot_distance)


def rvs_generator_loss(ot_distance) -> tf.Tensor:
    """Section 4's generator loss, minimised: -OT(f(x), f(x_adv)) (G maximises the feature distance);
    per replica its share of the OT over the gathered global batch."""
    return -replica_share(ot_distance)


def synthesize(generator, x, z, start, norm, eps, training: bool) -> tf.Tensor:
    """x_adv from noise (section 4): G(z) clipped to the eps-ball, added to the random start
    x0 = clip(x + start, 0, 1), projected onto the eps-ball around x and onto [0, 1]."""
    x = tf.cast(x, tf.float32)
    delta = clip_eta(tf.cast(generator(z, training=training), tf.float32), norm, eps)
    x0 = tf.clip_by_value(x + start, 0.0, 1.0)
    return project(x0 + delta, x, norm, eps, 0.0, 1.0)


class RvSTraining(Defense):
    name = "rvs"

    def __init__(self, classifier, cfg, train, rng):
        super().__init__(classifier, cfg, train, rng)
        self.num_classes = int(classifier.output_shape[-1])
        self.norm = np.inf if cfg.rvs_norm == "inf" else 2
        # (features, logits) from one pass, on the classifier's own weights.
        self.features = with_features(classifier)
        self.generator = build_noise_generator(cfg.rvs_z_dim, classifier.input_shape[1:], cfg.gen_width)
        # Section 4: momentum SGD, lr 0.01, momentum 0.9.
        self.generator_optimizer = make_optimizer(train, cfg.rvs_gen_lr, momentum=GENERATOR_MOMENTUM)

    @staticmethod
    def run_name(cfg):
        return f"rvs-l{cfg.rvs_norm}-eps{cfg.eps:g}"

    @property
    def networks(self):
        return {"classifier": self.classifier, "generator": self.generator}

    @property
    def optimizers(self):
        return {"classifier": self.optimizer, "generator": self.generator_optimizer}

    def _noise(self, x):
        """A fresh (z, random start) for the batch x, from the checkpointed generator ``rng``."""
        z = self.rng.normal(tf.stack([tf.shape(x)[0], self.cfg.rvs_z_dim]), dtype=tf.float32)
        start = random_lp_vector(tf.shape(x), self.norm, self.cfg.eps, rng=self.rng)
        return z, start

    def _synthesize(self, generator, x, training):
        z, start = self._noise(x)
        return synthesize(generator, x, z, start, self.norm, self.cfg.eps, training)

    def perturb(self, networks, x, y):
        return self._synthesize(networks["generator"], x, training=False)

    def train_step(self, x, y):
        x = tf.cast(x, tf.float32)
        metrics = self.generator_step(x)
        metrics.update(self.classifier_step(x, y))
        return metrics

    def generator_step(self, x):
        """One momentum-SGD step on -OT (section 4) against the current, fixed classifier."""
        natural_features, _ = self.features(x, training=False)
        natural_features = tf.stop_gradient(gather_batch(natural_features))
        with tf.GradientTape() as tape:
            x_adv = self._synthesize(self.generator, x, training=True)
            adv_features, _ = self.features(x_adv, training=False)
            ot_distance = sinkhorn_cost(natural_features, gather_batch(adv_features), OT_EPSILON, OT_ITERATIONS)
            loss = rvs_generator_loss(ot_distance)
            scaled = self.generator_optimizer.scale_loss(loss)  # already a replica's share: not scaled_mean
        apply_gradients(self.generator_optimizer, tape, scaled, self.generator.trainable_variables)
        return {"generator_loss": -ot_distance}

    def classifier_step(self, x, y):
        """One step on CE(F(x_adv), smoothed y) + ot_weight * OT (section 4), x_adv held constant
        (fresh noise, G's updated weights); OT's gradient reaches F through both feature sets."""
        x_adv = tf.stop_gradient(self._synthesize(self.generator, x, training=True))
        with tf.GradientTape() as tape:
            natural_features, _ = self.features(x, training=True)
            adv_features, adv_logits = self.features(x_adv, training=True)
            ot_distance = sinkhorn_cost(gather_batch(natural_features), gather_batch(adv_features),
                                        OT_EPSILON, OT_ITERATIONS)
            smoothed_ce = smoothed_cross_entropy(y, adv_logits, num_classes=self.num_classes,
                                                 label_smoothing=self.cfg.label_smoothing)
            loss = rvs_classifier_loss(smoothed_ce, ot_distance, ot_weight=self.cfg.ot_weight)
            scaled = self.optimizer.scale_loss(loss)
        apply_gradients(self.optimizer, tape, scaled, self.classifier.trainable_variables)
        return {"loss": tf.reduce_mean(smoothed_ce) + self.cfg.ot_weight * ot_distance,
                "adv_loss": cross_entropy(y, adv_logits), "adv_acc": accuracy(y, adv_logits),
                "ot_loss": ot_distance, "delta_l2": l2_norm(x_adv - x)}
