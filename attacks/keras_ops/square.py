"""Square Attack (Andriushchenko et al. 2020, ECCV), L2 and L-inf, written once against keras.ops:
same API, algorithm and defaults as attacks/square.py (whose docstring describes them and its
differences from the reference). Here the random draws (the start, each iteration's window
positions, signs and orientation) come from NumPy on the host, per example, so every backend
searches along the same path; the loop runs in compiled chunks of iterations, and between chunks
the examples already fooled are dropped. ``return_count=True`` also returns the queries made.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from attacks import backends
from attacks.keras_ops import common
from attacks.keras_ops.apgd import finish
from attacks.keras_ops.checks import validate

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_CHUNK = 250  # iterations per compiled call; the fooled examples leave between calls
_TINY = 1e-12


def _margin(logits, y):
    return common.pick(logits, y) - common.best_other(logits, y)


def _rectangle(i, j, a, b, k_max, xp):
    """attacks.square._rectangle: sum over k in [Chebyshev distance from (a // 2, b // 2), max(a // 2,
    b // 2] of 1 / (k + 1)^2, at local (i, j). ``xp``: numpy or keras.ops."""
    distance = xp.maximum(xp.abs(i - a // 2), xp.abs(j - b // 2))
    ks = np.arange(k_max)
    count = xp.maximum(a // 2, b // 2) + 1
    inside = (ks >= distance[..., None]) & (ks < xp.expand_dims(count, -1) if xp is ops else ks < count)
    return xp.sum(xp.where(inside, (1.0 / np.square(ks + 1.0)).astype(np.float32), 0.0), axis=-1)


def _pattern(i, j, s, size, xp):
    """The paper's L2 pattern eta(s) at local (i, j) in [0, s)^2; ``size`` >= s bounds the grid (static)."""
    half = s // 2
    k_max = size // 2 + 2
    grid_i, grid_j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    in_square = (grid_i < s) & (grid_j < s)

    def halves(i, j):
        upper = xp.where(i < half, _rectangle(i, j, half, s, k_max, xp), 0.0)
        lower = xp.where(i >= half, _rectangle(i - half, j, s - half, s, k_max, xp), 0.0)
        return upper, lower

    upper_grid, lower_grid = halves(grid_i, grid_j)
    upper_norm = xp.sqrt(xp.sum(xp.where(in_square, xp.square(upper_grid), 0.0)))
    lower_norm = xp.sqrt(xp.sum(xp.where(in_square, xp.square(lower_grid), 0.0)))
    upper, lower = halves(i, j)
    return (upper / (upper_norm + _TINY) - lower / (lower_norm + _TINY)) / np.sqrt(2.0)


def _l2_start(x, eps, rng):
    """The reference's start (attacks.square._l2_start) in NumPy: a centred grid of s x s blocks
    (s = H // 5, at least 2), each an eta(s) pattern with its own sign per channel and orientation,
    rescaled to norm eps."""
    n, height, width, channels = x.shape
    s = max(min(height, width) // 5, 2)
    blocks_h, blocks_w = height // s, width // s
    rows = np.arange(height) - (height - blocks_h * s) // 2
    cols = np.arange(width) - (width - blocks_w * s) // 2
    block = np.clip(rows // s, 0, blocks_h - 1)[:, None] * blocks_w + np.clip(cols // s, 0, blocks_w - 1)[None, :]
    in_grid = ((rows >= 0) & (rows < blocks_h * s))[:, None] & ((cols >= 0) & (cols < blocks_w * s))[None, :]
    i = np.broadcast_to((rows % s)[:, None], (height, width))
    j = np.broadcast_to((cols % s)[None, :], (height, width))
    flip = (rng.random((n, blocks_h * blocks_w)) < 0.5)[:, block]  # [n, H, W]
    signs = np.where(rng.random((n, blocks_h * blocks_w, channels)) < 0.5, -1.0, 1.0)[:, block]  # [n, H, W, C]
    i, j = np.where(flip, j[None], i[None]), np.where(flip, i[None], j[None])
    pattern = _pattern(i, j, s, max(height, width), np)
    delta = (np.where(in_grid[None], pattern, 0.0)[..., None] * signs).astype(np.float32)
    norm = np.sqrt((delta.astype(np.float64) ** 2).sum((1, 2, 3), keepdims=True))
    return (delta * (eps / (norm + _TINY))).astype(np.float32)


def _start(x, eps, norm, rng, clip_min, clip_max):
    if norm == np.inf:
        stripes = np.where(rng.random((len(x), 1, x.shape[2], x.shape[3])) < 0.5, -1.0, 1.0)
        return np.clip(x + np.float32(eps) * stripes.astype(np.float32), clip_min, clip_max).astype(np.float32)
    return np.clip(x + _l2_start(x, eps, rng), clip_min, clip_max).astype(np.float32)


def _window(top, left, s, height, width):
    """[n, H, W, 1] float mask of the s x s windows at (top, left) [n]."""
    rows = np.arange(height)[None, :, None] - top[:, None, None]
    cols = np.arange(width)[None, None, :] - left[:, None, None]
    inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
    return ops.expand_dims(ops.cast(inside, "float32"), -1)


def _square_chunk(params, x, y, x_best, margin_best, draws, first, n_queries, eps, p_init, clip_min, clip_max, *,
                  call, norm, rescale):
    """Iterations first, first + 1, ... (at most draws.shape[0], none past n_queries) on the batch x.
    ``draws`` [T, B, 5 + C] uniform in [0, 1): each iteration's random numbers per example.
    Returns (x_best, margin_best, queries: the model evaluations of still-unfooled examples)."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    side_max = min(height, width)
    halvings = np.asarray(_HALVINGS, np.float32)
    steps = ops.shape(draws)[0]  # may be unknown while tracing (TensorFlow relaxes shapes)

    def offsets(u, limit):
        return ops.minimum(ops.cast(ops.floor(u * ops.cast(limit + 1, "float32")), "int32"), limit)

    def signs(u):
        return ops.where(u < 0.5, -1.0, 1.0)

    def body(t, x_best, margin_best, queries):
        i = first + t
        u = ops.take(draws, t, axis=0)
        active = margin_best > 0.0  # still correctly classified: keep searching
        it = ops.cast(i, "float32")
        if rescale:
            it = ops.floor(it / ops.cast(n_queries, "float32") * 10000.0)
        p = p_init / ops.power(2.0, ops.sum(ops.cast(it > halvings, "float32")))
        side = ops.cast(ops.round(ops.sqrt(p * float(height * width))), "int32")
        channel_signs = ops.reshape(signs(u[:, 5:5 + channels]), (-1, 1, 1, channels))
        if norm == np.inf:
            s = ops.clip(side, 1, side_max)
            mask = _window(offsets(u[:, 0], height - s), offsets(u[:, 1], width - s), s, height, width)
            proposal = x_best + mask * 2.0 * eps * channel_signs
            proposal = ops.clip(ops.clip(proposal, x - eps, x + eps), clip_min, clip_max)
        else:
            s = ops.maximum(side, 3)
            s = ops.minimum(s + 1 - s % 2, side_max - 1 + side_max % 2)  # odd, at most the image side
            top, left = offsets(u[:, 0], height - s), offsets(u[:, 1], width - s)
            first_w = _window(top, left, s, height, width)
            second_w = _window(offsets(u[:, 2], height - s), offsets(u[:, 3], width - s), s, height, width)
            delta = x_best - x
            window_norms = ops.sqrt(ops.sum(ops.square(delta * first_w), axis=(1, 2), keepdims=True))
            image_norm = ops.sqrt(ops.sum(ops.square(delta), axis=(1, 2, 3), keepdims=True))
            windows_norm = ops.sqrt(ops.sum(ops.square(delta * ops.maximum(first_w, second_w)), axis=(1, 2, 3),
                                            keepdims=True))
            transpose = (u[:, 4] < 0.5)[:, None, None]
            li = np.arange(height)[None, :, None] - top[:, None, None]
            lj = np.arange(width)[None, None, :] - left[:, None, None]
            li, lj = ops.where(transpose, lj, li), ops.where(transpose, li, lj)
            inside = (li >= 0) & (li < s) & (lj >= 0) & (lj < s)
            eta = _pattern(ops.clip(li, 0, s - 1), ops.clip(lj, 0, s - 1), s, max(height, width), ops)
            new = ops.expand_dims(ops.where(inside, eta, 0.0), -1) * channel_signs
            new = new + delta * first_w / (_TINY + window_norms)
            budget = ops.sqrt(ops.maximum(eps ** 2 - ops.square(image_norm), 0.0) / float(channels)
                              + ops.square(windows_norm))
            new = new / (_TINY + ops.sqrt(ops.sum(ops.square(new), axis=(1, 2), keepdims=True))) * budget
            delta = delta * (1.0 - second_w)
            delta = delta * (1.0 - first_w) + new * first_w
            norm_delta = ops.sqrt(ops.sum(ops.square(delta), axis=(1, 2, 3), keepdims=True))
            proposal = ops.clip(x + delta * eps / (norm_delta + _TINY), clip_min, clip_max)
        margin = _margin(ops.cast(call(params, proposal), "float32"), y)
        accept = ops.logical_and(active, ops.logical_or(margin < margin_best, margin <= 0.0))
        x_best = ops.where(accept[:, None, None, None], proposal, x_best)
        margin_best = ops.where(accept, margin, margin_best)
        return t + 1, x_best, margin_best, queries + ops.sum(ops.cast(active, "int32"))

    def cond(t, x_best, margin_best, queries):
        return ops.logical_and(ops.logical_and(t < steps, first + t < n_queries), ops.any(margin_best > 0.0))

    zero = ops.convert_to_tensor(0, "int32")
    _, x_best, margin_best, queries = ops.while_loop(cond, body, (zero, x_best, margin_best, zero))
    return backends.current().stop_gradient(x_best), margin_best, queries


def _run(model_fn, x, y, eps, norm, n_queries, p_init, rescale, clip_min, clip_max, rng):
    """One restart on the batch x; returns (fooled [B], x_best, queries)."""
    x_best = _start(x, eps, norm, rng, clip_min, clip_max)
    margin = common.logits_of(model_fn, x_best)
    margin = margin[np.arange(len(y)), y] - np.max(np.where(np.eye(margin.shape[1], dtype=bool)[y], -np.inf, margin), 1)
    queries = len(x)
    run = common.compiled(model_fn, _square_chunk, norm=norm, rescale=bool(rescale))
    scalars = [ops.convert_to_tensor(np.int32(n_queries))] + [ops.convert_to_tensor(np.float32(v)) for v in
                                                              (eps, p_init, clip_min, clip_max)]
    for first in range(0, int(n_queries), _CHUNK):
        draws = rng.random((min(_CHUNK, int(n_queries) - first), len(x), 5 + x.shape[3]), dtype=np.float32)
        live = np.flatnonzero(margin > 0.0)
        if not len(live):
            break
        size = common.padded_size(len(live))
        # Padding rows start "fooled" (margin -1): never searched, never counted.
        arrays = [common.pad(a, size) for a in (x[live], y[live], x_best[live])]
        margins = np.concatenate([margin[live], -np.ones(size - len(live), np.float32)]).astype(np.float32)
        draws_live = np.concatenate([draws[:, live], np.zeros((len(draws), size - len(live), draws.shape[2]),
                                                             np.float32)], axis=1)
        out_x, out_margin, n = run(*[ops.convert_to_tensor(a) for a in arrays + [margins, draws_live]],
                                   ops.convert_to_tensor(np.int32(first)), *scalars)
        x_best[live] = common.to_numpy(out_x)[:len(live)]
        margin[live] = common.to_numpy(out_margin)[:len(live)]
        queries += int(common.to_numpy(n))
    return margin <= 0.0, x_best, queries


def square_attack(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_queries=5000, p_init=0.8,
                  n_restarts=1, rescale_schedule=True, seed=0, return_count=False):
    """Square Attack, untargeted, as attacks.square.square_attack (images [B, H, W, C]). Returns x_adv
    (NumPy, x's shape and dtype): the misclassified point found, else x; with return_count, also
    the number of images the model evaluated."""
    from attacks import _checks
    _checks.check_integer("n_queries", n_queries, 1)
    x, x32, y = validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_queries, n_restarts, 1, 0.75, seed)
    if x.ndim != 4:
        raise ValueError(f"square_attack needs images [B, H, W, C], got shape {x.shape}.")
    if not 0.0 < float(p_init) <= 1.0:
        raise ValueError(f"p_init must be in (0, 1], got {p_init!r}.")
    correct = common.logits_of(model_fn, x32).argmax(-1) == y
    found = np.zeros(len(y), bool)
    x_adv, count = x32.copy(), len(x32)
    for restart in range(int(n_restarts)):
        idx = np.flatnonzero(correct & ~found)
        if not len(idx):
            break
        fooled, x_best, queries = _run(model_fn, x32[idx], y[idx], eps, norm, n_queries, p_init, rescale_schedule,
                                       clip_min, clip_max, common.host_rng(seed, 2, restart))
        x_adv[idx[fooled]] = x_best[fooled]
        found[idx[fooled]] = True
        count += queries
    return finish(x, x_adv, found, count, return_count)
