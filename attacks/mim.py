"""Momentum Iterative Method (Dong et al. 2018, MI-FGSM; L2 variant as CleverHans).

Same name, signature, defaults and numerics as
cleverhans/tf2/attacks/momentum_iterative_method.py (4.0.0), written as one tf.while_loop
over iterations. Compilation as in attacks/fgm.py.

Differences from CleverHans:
- sanity_checks defaults to False (CleverHans: True); when True it is a cheap run-time
  check that x lies in [clip_min, clip_max].
- An optional trailing loss_fn (CleverHans hard-codes cross-entropy, which stays the default).
- One-sided clipping is applied (CleverHans clips only when both bounds are given).
- The result is wrapped in tf.stop_gradient.
"""

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.fgm import assert_in_box, loss_gradient, optimize_linear, predicted_labels
from attacks.losses import cross_entropy_loss
from attacks.projection import clip_to_box, project

# CleverHans's floor on the mean absolute gradient used to normalise each step.
_MEAN_ABS_FLOOR = 1e-12


def _mim_graph(model_fn, x, eps, eps_iter, nb_iter, norm, loss_fn, clip_min, clip_max, y,
               targeted, decay_factor, sanity_checks):
    x32 = tf.cast(x, tf.float32)
    if sanity_checks:
        x32 = assert_in_box(x32, clip_min, clip_max)
    if y is None:
        y = predicted_labels(model_fn, x32)
    axes = list(range(1, x32.shape.rank))

    def body(i, x_adv, momentum):
        grad = loss_gradient(model_fn, loss_fn, x_adv, y, targeted)
        # Eq. 6 of Dong et al.: accumulate the L1-normalised gradient (mean, as CleverHans).
        grad /= tf.maximum(_MEAN_ABS_FLOOR, tf.reduce_mean(tf.abs(grad), axes, keepdims=True))
        momentum = decay_factor * momentum + grad
        x_adv = clip_to_box(x_adv + optimize_linear(momentum, eps_iter, norm), clip_min, clip_max)
        # CleverHans projects onto the ball and then clips; project does both.
        return i + 1, project(x_adv, x32, norm, eps, clip_min, clip_max), momentum

    _, x_adv, _ = tf.while_loop(lambda i, *_: i < nb_iter, body,
                                (tf.constant(0), x32, tf.zeros_like(x32)))
    return tf.cast(tf.stop_gradient(x_adv), x.dtype)


_mim_compiled = tf.function(_mim_graph, reduce_retracing=True)


def momentum_iterative_method(model_fn, x, eps=0.3, eps_iter=0.06, nb_iter=10, norm=np.inf,
                              clip_min=None, clip_max=None, y=None, targeted=False,
                              decay_factor=1.0, sanity_checks=False, loss_fn=None):
    """MIM: nb_iter steps of length eps_iter along the momentum of normalised gradients.

    model_fn: x -> logits. eps: ball radius (>= 0). eps_iter: step (>= 0). nb_iter: int >= 0.
    norm: np.inf or 2. y: integer labels; None uses the model's predictions. targeted:
    descend the loss towards y (y required). decay_factor: momentum decay mu.
    loss_fn(labels=, logits=): default sparse softmax cross-entropy, as CleverHans.
    Returns x_adv with x's shape and dtype.
    """
    _checks.check_norm(norm)
    _checks.check_non_negative("eps", eps)
    _checks.check_non_negative("eps_iter", eps_iter)
    _checks.check_iterations(nb_iter)
    _checks.check_clip(clip_min, clip_max)
    _checks.check_target(targeted, y)
    x = tf.convert_to_tensor(x)
    if x.shape.rank is None:
        raise ValueError("momentum_iterative_method needs x with a known rank.")
    y = None if y is None else tf.convert_to_tensor(y)
    run = _mim_graph if tf.inside_function() else _mim_compiled
    return run(model_fn, x, _checks.to_float32(eps), _checks.to_float32(eps_iter),
               tf.cast(nb_iter, tf.int32), norm, loss_fn or cross_entropy_loss,
               _checks.to_float32(clip_min), _checks.to_float32(clip_max), y, bool(targeted),
               _checks.to_float32(decay_factor), bool(sanity_checks))
