"""FAB-T (Croce & Hein 2020, ICML), the targeted Fast Adaptive Boundary attack, written once against
keras.ops: same API, algorithm and defaults as attacks/fab.py (whose docstring describes them); the
random starts of restarts after the first come from NumPy on the host. ``return_count=True`` also
returns the number of images the model evaluated."""
from __future__ import annotations

import numpy as np
from keras import ops

from attacks import _checks, backends
from attacks.keras_ops import common
from attacks.keras_ops.apgd import finish
from attacks.keras_ops.checks import validate

_NOT_FOUND = 1e10
_RESTART_FRACTION = 0.5  # the reference's random starts sit at eps / 2


def project_onto_hyperplane_box(w, c, lower, upper, norm):
    """The minimal-norm d with w . d = -c and lower <= d <= upper per row ([n, D]); the method of
    attacks.fab.project_onto_hyperplane_box (sorted breakpoints, cumulative sums), in keras.ops."""
    flip = c < 0.0
    w = ops.where(flip[:, None], -w, w)
    c = ops.abs(c)
    lower, upper = ops.minimum(lower, 0.0), ops.maximum(upper, 0.0)
    room = ops.where(w > 0.0, -lower, upper)
    magnitude = ops.abs(w)
    moves = magnitude > 0.0
    if norm == np.inf:
        q, r = magnitude, room
    else:
        q = ops.square(w)
        r = room / ops.where(moves, magnitude, 1.0)
    big = ops.max(r) + 1.0
    r = ops.where(moves, r, big)  # coordinates that do not move sort last and add nothing
    order = ops.argsort(r, axis=-1)
    r_sorted, q_sorted = ops.take_along_axis(r, order, axis=-1), ops.take_along_axis(q, order, axis=-1)
    q_cum = ops.cumsum(q_sorted, axis=-1)
    a_cum = ops.cumsum(q_sorted * r_sorted, axis=-1)
    q_total = q_cum[:, -1:]
    h = a_cum + r_sorted * (q_total - q_cum)  # h at each breakpoint, non-decreasing
    reached = h >= c[:, None]
    feasible = ops.any(reached, axis=-1)
    k = ops.cast(ops.argmax(ops.cast(reached, "int32"), axis=-1), "int32")  # first crossing
    before = ops.expand_dims(ops.maximum(k - 1, 0), -1)
    a_before = ops.where(k > 0, ops.take_along_axis(a_cum, before, axis=-1)[:, 0], 0.0)
    q_before = ops.where(k > 0, ops.take_along_axis(q_cum, before, axis=-1)[:, 0], 0.0)
    lam = (c - a_before) / ops.maximum(q_total[:, 0] - q_before, 1e-30)
    lam = ops.where(feasible, ops.maximum(lam, 0.0), big)[:, None]
    if norm == np.inf:
        d = -ops.sign(w) * ops.minimum(lam, room)
    else:
        d = ops.clip(-lam * w, lower, upper)
    return ops.where(moves, d, 0.0)


def _fab_run(params, x0, x1, y, targets, n_iter, alpha_max, eta, beta, clip_min, clip_max, *, call, norm):
    """One FAB-T run from x1 on the batch x0. Returns (distance [B], x_best): the smallest
    adversarial found and its norm (1e10 and x0 where none)."""
    backend = backends.current()
    rank, batch = len(x0.shape), ops.shape(x0)[0]  # the batch axis may be unknown (TensorFlow relaxes it)
    flat_shape = (-1, int(np.prod(x0.shape[1:])))
    image_shape = (-1,) + tuple(x0.shape[1:])

    def gap(x_in):
        logits = ops.cast(call(params, x_in), "float32")
        g = common.pick(logits, targets) - common.pick(logits, y)
        return ops.sum(g), g

    gradient = backend.value_and_grad(gap)

    def body(i, x1, best, x_best):
        _, g, w = gradient(x1)
        w = ops.reshape(w, flat_shape)
        x1_flat, x0_flat = ops.reshape(x1, flat_shape), ops.reshape(x0, flat_shape)
        # The hyperplane w . z = w . x1 - g: from a point p, c = w . p - (w . x1 - g).
        c0 = g + ops.sum(w * (x0_flat - x1_flat), axis=-1)
        points = ops.concatenate([x1_flat, x0_flat], axis=0)
        d = project_onto_hyperplane_box(ops.concatenate([w, w], axis=0), ops.concatenate([g, c0], axis=0),
                                        clip_min - points, clip_max - points, norm)
        lengths = ops.maximum(common.norms(d, norm), 1e-8)
        a1, a2 = lengths[:batch], lengths[batch:]
        alpha = common.per_example(ops.clip(a1 / (a1 + a2), 0.0, alpha_max), rank)
        d1, d2 = ops.reshape(d[:batch], image_shape), ops.reshape(d[batch:], image_shape)
        x1 = ops.clip((x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha, clip_min, clip_max)
        predicted = ops.cast(ops.argmax(ops.cast(call(params, x1), "float32"), axis=-1), "int32")
        adversarial = ops.not_equal(predicted, y)
        distance = common.norms(x1 - x0, norm)
        closer = ops.logical_and(adversarial, distance < best)
        x_best = ops.where(common.per_example(closer, rank), x1, x_best)
        best = ops.where(closer, distance, best)
        x1 = ops.where(common.per_example(adversarial, rank), x0 + beta * (x1 - x0), x1)
        return i + 1, x1, best, x_best

    not_found = ops.zeros_like(ops.sum(x0, axis=tuple(range(1, rank)))) + _NOT_FOUND
    start = (ops.convert_to_tensor(0, "int32"), x1, not_found, x0)
    _, _, best, x_best = ops.while_loop(lambda i, *_: i < n_iter, body, start)
    return best, backend.stop_gradient(x_best)


def random_start(rng, x, eps, norm, clip_min, clip_max):
    noise = rng.uniform(-1.0, 1.0, x.shape) if norm == np.inf else rng.standard_normal(x.shape)
    flat = noise.reshape(len(x), -1)
    scale = np.abs(flat).max(1) if norm == np.inf else np.sqrt((flat ** 2).sum(1))
    start = x + _RESTART_FRACTION * eps * noise / scale.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip(start, clip_min, clip_max).astype(np.float32)


def fab_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_target_classes=9, n_iter=100,
                 n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, seed=0, return_count=False):
    """FAB-T as attacks.fab.fab_targeted. Returns x_adv (NumPy, x's shape and dtype): the closest
    adversarial found within eps, else x; with return_count, also the images the model evaluated."""
    _checks.check_integer("n_target_classes", n_target_classes, 1)
    x, x32, y = validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, 1, 0.75, seed)
    if not 0.0 <= float(alpha_max) <= 1.0:
        raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max!r}.")
    if float(eta) < 1.0:
        raise ValueError(f"eta must be >= 1, got {eta!r}.")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}.")
    logits = common.logits_of(model_fn, x32)
    classes = logits.shape[-1]
    if classes < 2:
        raise ValueError(f"fab_targeted needs >= 2 classes, the model has {classes}.")
    ranked = np.argsort(-logits, axis=-1, kind="stable")
    correct = logits.argmax(-1) == y
    run = common.compiled(model_fn, _fab_run, norm=norm)
    scalars = [ops.convert_to_tensor(v) for v in (np.int32(n_iter),) + tuple(
        np.float32(v) for v in (alpha_max, eta, beta, clip_min, clip_max))]
    found = np.zeros(len(y), bool)
    x_adv, count = x32.copy(), len(x32)
    for rank in range(1, min(int(n_target_classes), classes - 1) + 1):
        for restart in range(int(n_restarts)):
            idx = np.flatnonzero(correct & ~found)
            if not len(idx):
                break
            size = common.padded_size(len(idx))
            start = x32[idx] if restart == 0 else random_start(common.host_rng(seed, 1, rank, restart), x32[idx],
                                                               eps, norm, clip_min, clip_max)
            arrays = [common.pad(a, size) for a in (x32[idx], start, y[idx], ranked[idx, rank].astype(np.int32))]
            best, x_best = run(*[ops.convert_to_tensor(a) for a in arrays], *scalars)
            success = common.to_numpy(best)[:len(idx)] <= np.float32(eps)
            x_adv[idx[success]] = common.to_numpy(x_best)[:len(idx)][success]
            found[idx[success]] = True
            count += 2 * len(idx) * int(n_iter)  # a gradient and a success test per iteration
    return finish(x, x_adv, found, count, return_count)
