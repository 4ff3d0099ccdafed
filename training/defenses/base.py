"""What every defense shares: the classifier update of eq. 4 and the bookkeeping of a step.

A defense is one small class: the networks it trains, their optimizers, the training attack
(``perturb``) and the train step. The loop in ``training/loop.py`` owns everything else (data,
EMA, checkpoints, logging), so a new defense never copies it.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from attacks.projection import l2_norm
from training.config import SGD_MOMENTUM, DefenseConfig, TrainConfig
from training.distribute import global_batch_mean


def per_example_cross_entropy(labels, logits) -> tf.Tensor:
    """Softmax cross-entropy per example, computed in float32 whatever the compute policy."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def cross_entropy(labels, logits) -> tf.Tensor:
    """Mean softmax cross-entropy over this replica's batch (for metrics; losses that are
    differentiated use ``global_batch_mean`` of ``per_example_cross_entropy``)."""
    return tf.reduce_mean(per_example_cross_entropy(labels, logits))


def accuracy(labels, logits) -> tf.Tensor:
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32))


def adversarial_training_loss(clean_ce, adv_ce, adv_coeff: float) -> tf.Tensor:
    """The classifier's side of the minimax game (PGN paper eq. 4 with Table 1's "Adv Coefficient"):
    (1 - a) * CE(F(x), y) + a * CE(F(x_adv), y)."""
    return (1.0 - adv_coeff) * clean_ce + adv_coeff * adv_ce


def make_optimizer(train: TrainConfig, learning_rate: float | None = None,
                   momentum: float | None = None) -> keras.optimizers.Optimizer:
    """Adam at ``train.lr`` (Table 1: 5e-4, no weight decay) unless another learning rate is given,
    or momentum SGD when ``momentum`` is (or ``--optimizer sgd``: momentum 0.9); loss-scaled under
    mixed_float16 (not bfloat16, whose exponent range is float32's), for every network."""
    learning_rate = train.lr if learning_rate is None else learning_rate
    if momentum is None and train.optimizer == "sgd":
        momentum = SGD_MOMENTUM
    if momentum is None:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if train.loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class Defense:
    """Adversarial training of ``classifier`` against the attack ``perturb`` defines.

    Subclasses set ``name`` and override ``perturb`` (and ``train_step`` if they train more than
    the classifier). ``rng`` draws random starts and noise: a ``training.distribute.ReplicaNoise``
    in training (the same draws under any strategy), or a ``tf.random.Generator``.

    ``train_step`` runs once per replica on its slice of the global batch (``training/
    distribute.py``): every loss that is differentiated is a ``global_batch_mean``, and metrics
    are means over the replica's slice, which the loop averages over replicas.
    """

    name = "base"
    trains_on_attack = True  # False: no training attack (clean training), so none is reported

    def __init__(self, classifier: keras.Model, cfg: DefenseConfig, train: TrainConfig,
                 rng):
        cfg.validate()  # the declared choices and bounds (training/defenses/*_settings.py), checked once here
        self.classifier = classifier
        self.cfg = cfg.resolved()
        self.rng = rng
        self.optimizer = make_optimizer(train)

    @staticmethod
    def run_name(cfg: DefenseConfig) -> str:
        """Short name of this defense's key setting, used in default run directories."""
        return cfg.defense

    @property
    def networks(self) -> dict[str, keras.Model]:
        return {"classifier": self.classifier}

    @property
    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"classifier": self.optimizer}

    def build(self) -> None:
        """Creates optimizer slots now: a compiled (or distributed) step cannot create them lazily."""
        for name, optimizer in self.optimizers.items():
            optimizer.build(self.networks[name].trainable_variables)

    def perturb(self, networks: dict[str, keras.Model], x, y) -> tf.Tensor:
        """The defense's training attack on ``networks`` (live or EMA copies); returns x_adv."""
        raise NotImplementedError

    def train_step(self, x, y) -> dict[str, tf.Tensor]:
        """One batch: craft x_adv against the current classifier, then the eq. 4 classifier update."""
        x_adv = tf.stop_gradient(self.perturb(self.networks, x, y))
        return self.classifier_update(x, x_adv, y)

    def classifier_update(self, x, x_adv, y) -> dict[str, tf.Tensor]:
        """One optimizer step on (1 - a) CE(F(x)) + a CE(F(x_adv)), x_adv held constant."""
        with tf.GradientTape() as tape:
            loss, _, metrics = self.classifier_objective(x, x_adv, y)
            scaled = scaled_mean(self.optimizer, loss)
        apply_gradients(self.optimizer, tape, scaled, self.classifier.trainable_variables)
        metrics.update(delta_l2=l2_norm(x_adv - x))
        return metrics

    def classifier_objective(self, x, x_adv, y):
        """The classifier's side of eq. 4, per example, to be differentiated by the caller's tape:
        returns (loss, CE(F(x_adv), y), metrics).

        With a = 1 (Table 1) the clean forward pass is skipped: it would cost a third of a
        clean step and contribute nothing to the gradient.
        """
        a = self.cfg.adv_coeff
        adv_logits = self.classifier(x_adv, training=True)
        adv_ce = per_example_cross_entropy(y, adv_logits)
        metrics = {"adv_loss": tf.reduce_mean(adv_ce), "adv_acc": accuracy(y, adv_logits)}
        clean_ce = tf.zeros_like(adv_ce)
        if a < 1.0:
            clean_logits = self.classifier(x, training=True)
            clean_ce = per_example_cross_entropy(y, clean_logits)
            metrics.update(clean_loss=tf.reduce_mean(clean_ce), clean_acc=accuracy(y, clean_logits))
        loss = adversarial_training_loss(clean_ce, adv_ce, a)
        metrics["loss"] = tf.reduce_mean(loss)
        return loss, adv_ce, metrics

    def monitor(self, networks: dict[str, keras.Model], x, y, x_adv) -> dict[str, tf.Tensor]:
        """Extra per-epoch diagnostics of the training attack on the monitor images (batch means,
        logged beside the loop's own); none by default."""
        return {}


def scaled_mean(optimizer: keras.optimizers.Optimizer, per_example_loss) -> tf.Tensor:
    """The loss an optimizer differentiates: the global batch mean, loss-scaled under
    mixed_float16. Call it inside the tape."""
    return optimizer.scale_loss(global_batch_mean(per_example_loss))


def apply_gradients(optimizer: keras.optimizers.Optimizer, tape: tf.GradientTape, scaled_loss, variables) -> None:
    """One optimizer step on ``variables`` from ``tape``'s gradient of ``scaled_loss`` (which
    ``scaled_mean`` made, or ``optimizer.scale_loss`` of a loss already reduced; the optimizer unscales)."""
    optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
