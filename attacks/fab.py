"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, ICML, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), L2 and L-inf, as AutoAttack runs it.

Public API (model_fn: x -> logits, x in [clip_min, clip_max]):

    fab_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None,
                 n_target_classes=9, n_iter=100, n_restarts=1, alpha_max=0.1, eta=1.05,
                 beta=0.9, seed=0) -> x_adv
    project_onto_hyperplane_box(t, w, c, lower, upper, norm) -> d

x_adv has x's shape and dtype: per example the smallest adversarial FAB found, if its norm is at
most eps (AutoAttack's success test), else x itself.

One run (reference: github fra31/auto-attack, fab_base.py / fab_pt.py; read, not copied), for
the target t and label y of each example, from x1 = x0 = x (restarts > 0: a random start at
distance eps / 2 in the chosen norm, clipped to the box), for n_iter iterations:
- linearise g = z_t - z_y at x1: the hyperplane {z : g(x1) + grad g(x1) . (z - x1) = 0};
- d1, d2 = the minimal-norm steps from x1 and from x0 onto that hyperplane inside the box
  (project_onto_hyperplane_box, exact);
- alpha = min(max(||d1|| / (||d1|| + ||d2||), 0), alpha_max): the bias towards x0;
- x1 = clip((1 - alpha)(x1 + eta d1) + alpha (x0 + eta d2)) (eta: the overshoot);
- if x1 is misclassified: keep it if it is the closest yet, then step back
  x1 = x0 + beta (x1 - x0) (the final backward step of each successful iteration).
AutoAttack standard: targets ranked 2nd ... 10th by the logits at x (9 for 10 classes, capped at
K - 1 here), 100 iterations, one run per target without random start; each further restart
starts at random. Only examples still classified correctly (and not yet fooled within eps)
are attacked by the next target or restart.

Compilation as attacks/apgd.py: one run is one call of a module-level tf.function (a
tf.while_loop over iterations on the whole batch), inlined inside a caller's tf.function;
float32 inputs and logits; stateless randomness keyed on `seed`, target and restart.
Cost per iteration: one forward and one backward pass, plus one forward pass (the success test).
"""

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.apgd import _validate
from attacks.projection import non_batch_axes

_NOT_FOUND = 1e10
_RESTART_FRACTION = 0.5  # the reference's random starts sit at eps / 2


def project_onto_hyperplane_box(t, w, c, lower, upper, norm):
    """The minimal-norm d with w . d = -c and lower <= d <= upper (per row; lower <= 0 <= upper).

    t is unused beyond its shape; rows are [n, D] float32. With c >= 0 (flip w and c otherwise),
    moving coordinate i against sign(w_i) by m_i at most (m_i = -lower_i or upper_i) lowers w . d
    by h(lam) = sum_i q_i min(lam, r_i) at "radius" lam, with (q_i, r_i) = (w_i^2, m_i / |w_i|)
    for L2 (d_i = clip(-lam w_i, lower_i, upper_i), the KKT form) and (|w_i|, m_i) for L-inf
    (d_i = -sign(w_i) min(lam, m_i)). h is piecewise linear and increasing: sort r, evaluate h at
    the breakpoints by cumulative sums, solve h(lam) = c on the segment where it crosses. If the
    box does not reach the hyperplane (h(inf) < c) the fully saturated step is returned, the box
    point closest to the hyperplane along w.
    """
    del t
    flip = c < 0.0
    w = tf.where(flip[:, None], -w, w)
    c = tf.abs(c)
    lower, upper = tf.minimum(lower, 0.0), tf.maximum(upper, 0.0)
    room = tf.where(w > 0.0, -lower, upper)  # m_i
    magnitude = tf.abs(w)
    moves = magnitude > 0.0
    if norm == np.inf:
        q, r = magnitude, room
    else:
        q = tf.square(w)
        r = room / tf.where(moves, magnitude, 1.0)
    big = tf.reduce_max(r) + 1.0
    r = tf.where(moves, r, big)  # coordinates that do not move sort last and add nothing
    order = tf.argsort(r, axis=-1, stable=True)
    r_sorted, q_sorted = tf.gather(r, order, batch_dims=1), tf.gather(q, order, batch_dims=1)
    q_cum = tf.cumsum(q_sorted, axis=-1)
    a_cum = tf.cumsum(q_sorted * r_sorted, axis=-1)
    q_total = q_cum[:, -1:]
    h = a_cum + r_sorted * (q_total - q_cum)  # h at each breakpoint, non-decreasing
    reached = h >= c[:, None]
    feasible = tf.reduce_any(reached, axis=-1)
    k = tf.argmax(tf.cast(reached, tf.int32), axis=-1, output_type=tf.int32)  # first crossing
    a_before = tf.where(k > 0, tf.gather(a_cum, tf.maximum(k - 1, 0), batch_dims=1), 0.0)
    q_before = tf.where(k > 0, tf.gather(q_cum, tf.maximum(k - 1, 0), batch_dims=1), 0.0)
    lam = (c - a_before) / tf.maximum(q_total[:, 0] - q_before, 1e-30)
    lam = tf.where(feasible, tf.maximum(lam, 0.0), big)[:, None]
    if norm == np.inf:
        d = -tf.sign(w) * tf.minimum(lam, room)
    else:
        d = tf.clip_by_value(-lam * w, lower, upper)
    return tf.where(moves, d, 0.0)


def _norms(d, norm):
    axes = non_batch_axes(d)
    if norm == np.inf:
        return tf.reduce_max(tf.abs(d), axis=axes)
    return tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes))


def _fab_run(model_fn, x0, y, targets, eps, norm, n_iter, alpha_max, eta, beta, clip_min, clip_max,
             random_start, key):
    """One FAB-T run on the batch x0 (float32). Returns (distance [B], x_best): the smallest
    adversarial found and its norm (1e10 and x0 where none)."""
    batch = tf.shape(x0)[0]
    flat = tf.stack([batch, -1])
    per_example = [-1] + [1] * (x0.shape.rank - 1)
    x1 = x0
    if random_start:
        if norm == np.inf:
            noise = tf.random.stateless_uniform(tf.shape(x0), key, -1.0, 1.0)
        else:
            noise = tf.random.stateless_normal(tf.shape(x0), key)
        x1 = x0 + _RESTART_FRACTION * eps * noise / tf.reshape(_norms(noise, norm), per_example)
        x1 = tf.clip_by_value(x1, clip_min, clip_max)

    def body(i, x1, best, x_best):
        with tf.GradientTape() as tape:
            tape.watch(x1)
            logits = tf.cast(model_fn(x1), tf.float32)
            g = tf.gather(logits, targets, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
            total = tf.reduce_sum(g)
        w = tf.reshape(tape.gradient(total, x1), flat)
        x1_flat, x0_flat = tf.reshape(x1, flat), tf.reshape(x0, flat)
        # The hyperplane w . z = w . x1 - g: from a point p, c = w . p - (w . x1 - g).
        c1 = g
        c0 = g + tf.reduce_sum(w * (x0_flat - x1_flat), axis=-1)
        points = tf.concat([x1_flat, x0_flat], 0)
        d = project_onto_hyperplane_box(points, tf.concat([w, w], 0), tf.concat([c1, c0], 0),
                                        clip_min - points, clip_max - points, norm)
        lengths = tf.maximum(_norms(d, norm), 1e-8)
        a1, a2 = lengths[:batch], lengths[batch:]
        alpha = tf.reshape(tf.clip_by_value(a1 / (a1 + a2), 0.0, alpha_max), per_example)
        d1, d2 = tf.reshape(d[:batch], tf.shape(x0)), tf.reshape(d[batch:], tf.shape(x0))
        x1 = tf.clip_by_value((x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha,
                              clip_min, clip_max)
        adversarial = tf.not_equal(tf.argmax(tf.cast(model_fn(x1), tf.float32), axis=-1,
                                             output_type=y.dtype), y)
        distance = _norms(x1 - x0, norm)
        closer = adversarial & (distance < best)
        x_best = tf.where(tf.reshape(closer, per_example), x1, x_best)
        best = tf.where(closer, distance, best)
        x1 = tf.where(tf.reshape(adversarial, per_example), x0 + beta * (x1 - x0), x1)
        # Slices of the stacked projection lose a static batch of 1 (None broadcasts with 1).
        return (i + 1, tf.ensure_shape(x1, x0.shape), tf.ensure_shape(best, x0.shape[:1]),
                tf.ensure_shape(x_best, x0.shape))

    start = (tf.constant(0), x1, tf.fill([batch], _NOT_FOUND), x0)
    _, _, best, x_best = tf.while_loop(lambda i, *_: i < n_iter, body, start)
    return best, x_best


_fab_compiled = tf.function(_fab_run, reduce_retracing=True)


def fab_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_target_classes=9,
                 n_iter=100, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, seed=0):
    """FAB-T: see the module docstring. eps (>= 0): the success radius and the random starts'
    scale; norm: 2 or np.inf; y: labels (None: the predictions); n_target_classes (>= 1, capped
    at K - 1); n_iter (>= 1) per run; n_restarts (>= 1) runs per target, the first from x;
    alpha_max in [0, 1], eta >= 1, beta in [0, 1]: the paper's defaults 0.1, 1.05, 0.9.
    Returns x_adv (x's shape and dtype): the closest adversarial found within eps, else x.
    """
    _checks.check_integer("n_target_classes", n_target_classes, 1)
    x, x32, y = _validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, 1, 0.75,
                          seed)
    if not 0.0 <= float(alpha_max) <= 1.0:
        raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max!r}.")
    if float(eta) < 1.0:
        raise ValueError(f"eta must be >= 1, got {eta!r}.")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}.")
    if clip_min is None or clip_max is None:
        raise ValueError("fab_targeted needs both clip_min and clip_max (its projection is onto the box).")
    logits = tf.cast(model_fn(x32), tf.float32)
    classes = int(logits.shape[-1])
    if classes < 2:
        raise ValueError(f"fab_targeted needs >= 2 classes, the model has {classes}.")
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    correct = tf.equal(tf.argmax(logits, axis=-1), y)
    eps32 = _checks.to_float32(eps)
    hyper = dict(eps=eps32, norm=norm, n_iter=tf.constant(int(n_iter)),
                 alpha_max=_checks.to_float32(alpha_max), eta=_checks.to_float32(eta),
                 beta=_checks.to_float32(beta), clip_min=_checks.to_float32(clip_min),
                 clip_max=_checks.to_float32(clip_max))
    run = _fab_run if tf.inside_function() else _fab_compiled
    found = tf.zeros_like(correct)
    x_adv = x32
    for rank in range(1, min(int(n_target_classes), classes - 1) + 1):
        for restart in range(int(n_restarts)):
            active = correct & ~found
            if tf.executing_eagerly() and not bool(tf.reduce_any(active)):
                break
            idx = tf.where(active)
            key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 1], tf.int64),
                                                           1000 * rank + restart)
            best, x_best = run(model_fn, tf.gather_nd(x32, idx), tf.gather_nd(y, idx),
                               tf.cast(tf.gather_nd(ranked[:, rank], idx), tf.int64),
                               random_start=restart > 0, key=key, **hyper)
            success = best <= eps32
            rows = tf.boolean_mask(idx, success)
            x_adv = tf.tensor_scatter_nd_update(x_adv, rows, tf.boolean_mask(x_best, success))
            found = tf.tensor_scatter_nd_update(found, rows, tf.ones(tf.shape(rows)[:1], tf.bool))
    per_example = [-1] + [1] * (x32.shape.rank - 1)
    return tf.stop_gradient(tf.where(tf.reshape(found, per_example), tf.cast(x_adv, x.dtype), x))
