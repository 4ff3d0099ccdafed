"""Projected Gradient Descent (Kurakin et al. 2016 without, Madry et al. 2018 with random start).

Same name, signature and numerics as cleverhans/tf2/attacks/projected_gradient_descent.py
(4.0.0) plus `rng`, written as one tf.while_loop over iterations on the whole batch.
Compilation as in attacks/fgm.py: inline inside a tf.function, else through a module-level
tf.function traced once per model_fn, loss_fn, norm, flags, rng object and input shape.

Differences from CleverHans:
- rand_init=None means no random start, as in CleverHans (its madry_et_al sets True).
- rng: an optional tf.random.Generator for the random start, so a training run can
  checkpoint and reproduce it; None falls back to tf.random ops like CleverHans.
- sanity_checks: CleverHans's check builds a ragged list that numpy 2 rejects. Here it is
  a cheap run-time check that x lies in [clip_min, clip_max]; CleverHans's other check
  (eps_iter <= eps) is always done, as a ValueError.
- One-sided clipping (only clip_min or only clip_max) is allowed.
- The result is wrapped in tf.stop_gradient: nobody differentiates through the loop.
"""

import tensorflow as tf

from attacks import _checks
from attacks.fgm import assert_in_box, fgm_step, predicted_labels
from attacks.losses import cross_entropy_loss
from attacks.projection import clip_eta, clip_to_box, project, random_lp_vector


def _pgd_graph(model_fn, x, eps, eps_iter, nb_iter, norm, loss_fn, clip_min, clip_max, y,
               targeted, rand_init, rand_minmax, sanity_checks, rng):
    x32 = tf.cast(x, tf.float32)
    if sanity_checks:
        x32 = assert_in_box(x32, clip_min, clip_max)
    if rand_init:
        eta = random_lp_vector(tf.shape(x32), norm, rand_minmax, rng)
    else:
        eta = tf.zeros_like(x32)
    x_adv = clip_to_box(x32 + clip_eta(eta, norm, eps), clip_min, clip_max)
    if y is None:
        y = predicted_labels(model_fn, x32)

    def body(i, x_adv):
        x_adv = fgm_step(model_fn, x_adv, eps_iter, norm, loss_fn, clip_min, clip_max, y, targeted)
        # FGM already clipped to the box; project clips again because x + (x_adv - x)
        # can differ from x_adv by rounding (as CleverHans).
        return i + 1, project(x_adv, x32, norm, eps, clip_min, clip_max)

    _, x_adv = tf.while_loop(lambda i, _: i < nb_iter, body, (tf.constant(0), x_adv))
    return tf.cast(tf.stop_gradient(x_adv), x.dtype)


_pgd_compiled = tf.function(_pgd_graph, reduce_retracing=True)


def projected_gradient_descent(model_fn, x, eps, eps_iter, nb_iter, norm, loss_fn=None,
                               clip_min=None, clip_max=None, y=None, targeted=False,
                               rand_init=None, rand_minmax=None, sanity_checks=False, rng=None):
    """PGD: nb_iter FGM steps of length eps_iter, each projected onto the eps-ball and box.

    model_fn: x -> logits. eps: ball radius (>= 0). eps_iter: step (0 <= eps_iter <= eps).
    nb_iter: iterations (int >= 0; may be a tensor). norm: np.inf or 2.
    loss_fn(labels=, logits=) -> per-example loss; default sparse softmax cross-entropy
    (attacks.losses.margin_loss is the CW-style alternative). y: integer labels; None uses
    the model's predictions. targeted: descend the loss towards y (y required).
    rand_init: start uniformly at random in the ball of radius rand_minmax (default eps),
    drawn from rng (a tf.random.Generator) if given. Returns x_adv with x's shape and dtype.
    """
    _checks.check_norm(norm)
    _checks.check_non_negative("eps", eps)
    _checks.check_non_negative("eps_iter", eps_iter)
    _checks.check_step_within_ball(eps_iter, eps)
    _checks.check_iterations(nb_iter)
    _checks.check_non_negative("rand_minmax", rand_minmax)
    _checks.check_clip(clip_min, clip_max)
    _checks.check_target(targeted, y)
    _checks.check_rng(rng)
    x = tf.convert_to_tensor(x)
    y = None if y is None else tf.convert_to_tensor(y)
    eps = _checks.to_float32(eps)
    rand_minmax = eps if rand_minmax is None else _checks.to_float32(rand_minmax)
    run = _pgd_graph if tf.inside_function() else _pgd_compiled
    return run(model_fn, x, eps, _checks.to_float32(eps_iter), tf.cast(nb_iter, tf.int32), norm,
               loss_fn or cross_entropy_loss, _checks.to_float32(clip_min),
               _checks.to_float32(clip_max), y, bool(targeted), bool(rand_init), rand_minmax,
               bool(sanity_checks), rng)
