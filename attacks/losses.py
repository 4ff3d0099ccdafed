"""Per-example attack losses, called as loss_fn(labels=..., logits=...) like CleverHans's.

Labels are integer class ids of shape [B]; logits are [B, K]. The attacks cast logits to
float32 before calling a loss.
"""

import tensorflow as tf


def cross_entropy_loss(labels, logits):
    """Sparse softmax cross-entropy from logits, per example: CleverHans's default loss_fn."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def margin_loss(labels, logits):
    """CW-style margin max_{j != y} z_j - z_y, per example (Carlini & Wagner 2017, eq. f_6
    with kappa = inf). Positive once the example is misclassified.

    Unlike cross-entropy, its gradient does not vanish on confident models, where
    CleverHans's L2 step (gradient / max(||g||, 1e-6)) stalls.
    """
    logits = tf.convert_to_tensor(logits)
    is_label = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    label_logit = tf.reduce_max(tf.where(is_label, logits, logits.dtype.min), axis=-1)
    best_other = tf.reduce_max(tf.where(is_label, logits.dtype.min, logits), axis=-1)
    return best_other - label_logit
