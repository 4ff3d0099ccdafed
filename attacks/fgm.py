"""Fast Gradient Method (Goodfellow et al. 2015; L2 variant as in Miyato et al. 2016).

Same name, signature and numerics as cleverhans/tf2/attacks/fast_gradient_method.py
(4.0.0), written as compiled TF code:
- called inside a tf.function (e.g. an adversarial-training step) it adds its ops there;
- called eagerly it runs through a module-level tf.function, traced once per model_fn,
  loss_fn, norm, flags and input shape (numeric hyper-parameters are passed as tensors,
  so a new eps does not retrace). Reuse one model_fn object across calls: a fresh lambda
  per call retraces. `tf.config.run_functions_eagerly(True)` runs it op by op for debugging.

The input gradient, the step and the clipping are float32 whatever the model's dtype
policy: under mixed_float16 the logits are cast to float32 before the loss.
"""

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.losses import cross_entropy_loss
from attacks.projection import SQUARED_NORM_FLOOR, clip_to_box, non_batch_axes


def predicted_labels(model_fn, x):
    """The model's predicted classes: CleverHans's labels when y is None (no label leaking)."""
    return tf.argmax(tf.cast(model_fn(x), tf.float32), axis=-1)


def loss_gradient(model_fn, loss_fn, x, y, targeted):
    """Float32 gradient of the summed per-example loss with respect to x (float32).

    Targeted: the loss is negated, so ascending it moves towards the target class y.
    """
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(labels=y, logits=tf.cast(model_fn(x), tf.float32))
        if targeted:
            loss = -loss
    # A model that ignores part of x has zero gradient there, not None.
    return tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def optimize_linear(grad, eps, norm=np.inf):
    """argmax of <eta, grad> over ||eta||_norm <= eps, per example (CleverHans's optimize_linear).

    L-inf: eps * sign(grad). L2: eps * grad / sqrt(max(1e-12, ||grad||^2)), i.e. the norm is
    floored at 1e-6: a zero gradient gives a zero step, and a gradient with norm below 1e-6
    gives a step shorter than eps (CleverHans's behaviour, kept to agree with it).
    """
    _checks.check_norm(norm)
    grad = tf.cast(grad, tf.float32)
    eps = tf.cast(eps, tf.float32)
    if norm == np.inf:
        # sign has zero derivative anyway; stop_gradient just keeps it out of outer tapes.
        return eps * tf.stop_gradient(tf.sign(grad))
    squared = tf.reduce_sum(tf.square(grad), non_batch_axes(grad), keepdims=True)
    return eps * grad / tf.sqrt(tf.maximum(SQUARED_NORM_FLOOR, squared))


def fgm_step(model_fn, x, eps, norm, loss_fn, clip_min, clip_max, y, targeted):
    """One FGM step from float32 x with labels y, clipped to the box (PGD's inner step)."""
    grad = loss_gradient(model_fn, loss_fn, x, y, targeted)
    return clip_to_box(x + optimize_linear(grad, eps, norm), clip_min, clip_max)


def assert_in_box(x, clip_min, clip_max):
    """x, after run-time checks that it lies in [clip_min, clip_max] (sanity_checks=True)."""
    checks = []
    if clip_min is not None:
        checks.append(tf.debugging.assert_greater_equal(x, clip_min, message="input below clip_min"))
    if clip_max is not None:
        checks.append(tf.debugging.assert_less_equal(x, clip_max, message="input above clip_max"))
    with tf.control_dependencies(checks):
        return tf.identity(x)


def _fgm_graph(model_fn, x, eps, norm, loss_fn, clip_min, clip_max, y, targeted, sanity_checks):
    x32 = tf.cast(x, tf.float32)
    if sanity_checks:
        x32 = assert_in_box(x32, clip_min, clip_max)
    if y is None:
        y = predicted_labels(model_fn, x32)
    x_adv = fgm_step(model_fn, x32, eps, norm, loss_fn, clip_min, clip_max, y, targeted)
    return tf.cast(x_adv, x.dtype)


# reduce_retracing: a last, smaller evaluation batch relaxes the batch axis once, not per size.
_fgm_compiled = tf.function(_fgm_graph, reduce_retracing=True)


def fast_gradient_method(model_fn, x, eps, norm, loss_fn=None, clip_min=None, clip_max=None,
                         y=None, targeted=False, sanity_checks=False):
    """Fast Gradient Method: x + eps * (steepest-ascent direction of the loss under `norm`).

    model_fn: x -> logits. x: a batch, usually in [0, 1]. eps: step length (>= 0).
    norm: np.inf or 2 (CleverHans also has 1; not provided here). loss_fn(labels=, logits=)
    -> per-example loss; default sparse softmax cross-entropy (integer labels [B]).
    clip_min/clip_max: the box (either may be None). y: integer labels; None uses the
    model's predictions. targeted: descend the loss towards y (y required).
    sanity_checks: if True, run-time checks that x lies in [clip_min, clip_max].
    Returns x_adv with x's shape and dtype. Differentiable with respect to x for L2, as in
    CleverHans; wrap in tf.stop_gradient to treat it as a constant.
    """
    _checks.check_norm(norm)
    _checks.check_non_negative("eps", eps)
    _checks.check_clip(clip_min, clip_max)
    _checks.check_target(targeted, y)
    x = tf.convert_to_tensor(x)
    y = None if y is None else tf.convert_to_tensor(y)
    run = _fgm_graph if tf.inside_function() else _fgm_compiled
    return run(model_fn, x, _checks.to_float32(eps), norm, loss_fn or cross_entropy_loss,
               _checks.to_float32(clip_min), _checks.to_float32(clip_max), y, bool(targeted),
               bool(sanity_checks))
