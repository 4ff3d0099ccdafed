"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, ECCV), L2 and L-inf: a black-box
random search that queries only the model's outputs (no gradients).

Public API (model_fn: x -> logits, x an image batch [B, H, W, C] in [clip_min, clip_max]):

    square_attack(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_queries=5000,
                  p_init=0.8, n_restarts=1, rescale_schedule=True, seed=0) -> x_adv
    square_p_schedule(iteration, n_queries, p_init=0.8, rescale=True) -> p

x_adv has x's shape and dtype: per example the first misclassified point found (the search stops
for an example once it is fooled), else x itself.

As the paper and the reference (github fra31/auto-attack, square.py; read, not copied):
- loss: the margin z_y - max_{j != y} z_j, minimised; a proposal replaces the current point if
  it lowers the margin (or is misclassified);
- p (the fraction of pixels a square covers) starts at p_init = 0.8 and halves after iterations
  10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query budget; rescale_schedule=True
  scales those iterations by n_queries / 10000 (the paper, and the reference's class default);
  AutoAttack's standard version runs 5000 queries with rescale_schedule=False, as its code does;
  side s = round(sqrt(p H W)), at least 1 (L-inf) or 3 and odd (L2);
- L-inf: start from vertical stripes x + eps * (+-1 per column and channel); each proposal sets one
  s x s window to +-2 eps per channel around the current point, projected onto the ball and box;
- L2: start from a grid of (H // 5)-squares, each a signed "two-rectangle" pattern of concentric
  1/(k+1)^2 squares (the paper's eta), rescaled to norm eps; each proposal moves the perturbation's
  mass from a second window into a first and adds a new signed eta pattern there, keeping the
  total norm at eps (budget sqrt(max(eps^2 - ||delta||^2, 0) / C + ||delta_windows||^2) per channel).
Differences: window positions, signs and the pattern's orientation are drawn per example (the
reference draws one position per iteration for the whole batch and, for L-inf, one sign per
channel for the whole batch); positions are uniform over all H - s + 1 offsets (the reference
never uses the last); the L2 start grid uses squares of at least 2 pixels (H // 5 = 1 for images
under 10 pixels would leave the pattern empty). n_queries counts iterations after the start, so
an example can use n_queries + 1 model evaluations, as in the reference.

Compilation: a tf.while_loop over iterations in one module-level tf.function per restart, traced
once per model_fn, norm and input shape; each iteration queries the model only on the examples
not yet fooled (gathered, then scattered back). Randomness is stateless, keyed on `seed`, the
restart and the iteration: same seed and inputs, same x_adv. Float32 throughout.
"""

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.apgd import _validate

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def square_p_schedule(iteration, n_queries, p_init=0.8, rescale=True):
    """p at 0-based iteration `iteration` (a tensor is fine): p_init halved once per threshold
    of _HALVINGS the (rescaled) iteration exceeds."""
    it = tf.cast(iteration, tf.float32)
    if rescale:
        it = tf.floor(it / tf.cast(n_queries, tf.float32) * 10000.0)
    halvings = tf.reduce_sum(tf.cast(it > tf.constant(_HALVINGS, tf.float32), tf.float32))
    return tf.cast(p_init, tf.float32) / tf.pow(2.0, halvings)


def _margin(model_fn, x, y):
    logits = tf.cast(model_fn(x), tf.float32)
    is_label = tf.one_hot(y, tf.shape(logits)[-1], on_value=True, off_value=False)
    label_logit = tf.reduce_max(tf.where(is_label, logits, logits.dtype.min), axis=-1)
    return label_logit - tf.reduce_max(tf.where(is_label, logits.dtype.min, logits), axis=-1)


def _window(top, left, s, height, width):
    """[n, H, W, 1] float mask of the s x s windows at (top, left) [n] int32."""
    rows = tf.range(height)[None, :, None] - top[:, None, None]
    cols = tf.range(width)[None, None, :] - left[:, None, None]
    inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
    return tf.cast(inside, tf.float32)[..., None]


def _rectangle(i, j, a, b, k_max):
    """The reference's eta_rectangles(a, b) at local (i, j): sum over k >= Chebyshev distance from
    (a // 2, b // 2) and k < max(a // 2, b // 2) + 1 of 1 / (k + 1)^2."""
    distance = tf.maximum(tf.abs(i - a // 2), tf.abs(j - b // 2))
    ks = tf.range(k_max)
    count = tf.maximum(a // 2, b // 2) + 1
    terms = tf.where((ks >= distance[..., None]) & (ks < count), 1.0 / tf.cast(tf.square(ks + 1), tf.float32), 0.0)
    return tf.reduce_sum(terms, axis=-1)


def _pattern(i, j, s, k_max):
    """The paper's L2 pattern eta(s) at local coordinates (i, j) in [0, s)^2 (int tensors of any
    shape): a rectangle of 1/(k+1)^2 squares on the upper s // 2 rows and its negative below,
    each of unit L2 norm, the whole renormalised (so each half has norm 1/sqrt(2))."""
    half = s // 2
    grid_i, grid_j = tf.meshgrid(tf.range(s), tf.range(s), indexing="ij")

    def halves(i, j):
        upper = _rectangle(i, j, half, s, k_max) * tf.cast(i < half, tf.float32)
        lower = _rectangle(i - half, j, s - half, s, k_max) * tf.cast(i >= half, tf.float32)
        return upper, lower

    upper_grid, lower_grid = halves(grid_i, grid_j)
    upper, lower = halves(i, j)
    return (upper / (tf.norm(upper_grid) + _TINY) - lower / (tf.norm(lower_grid) + _TINY)) / np.sqrt(2.0)


def _eta(top, left, s, transpose, height, width):
    """eta(s) placed at (top, left) [n], transposed where `transpose` [n]: [n, H, W, 1]."""
    i = tf.range(height)[None, :, None] - top[:, None, None]
    j = tf.range(width)[None, None, :] - left[:, None, None]
    i, j = tf.where(transpose[:, None, None], j, i), tf.where(transpose[:, None, None], i, j)
    inside = (i >= 0) & (i < s) & (j >= 0) & (j < s)
    k_max = max(height, width) // 2 + 2
    values = _pattern(tf.clip_by_value(i, 0, s - 1), tf.clip_by_value(j, 0, s - 1), s, k_max)
    return tf.where(inside, values, 0.0)[..., None]


def _l2_norm(v, keepdims=True):
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=[1, 2, 3], keepdims=keepdims))


def _signs(shape, key):
    return tf.where(tf.random.stateless_uniform(shape, key) < 0.5, -1.0, 1.0)


def _offsets(n, limit, key):
    """n offsets uniform in [0, limit] (int32)."""
    return tf.random.stateless_uniform([n], key, 0, limit + 1, dtype=tf.int32)


def _l2_start(x, eps, key):
    """The reference's start: a centred grid of s x s blocks (s = H // 5, at least 2), each an eta(s)
    pattern with its own sign per channel and orientation, rescaled to norm eps."""
    n, height, width, channels = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    s = max(min(height, width) // 5, 2)
    blocks_h, blocks_w = height // s, width // s
    offset_h, offset_w = (height - blocks_h * s) // 2, (width - blocks_w * s) // 2
    rows, cols = np.arange(height) - offset_h, np.arange(width) - offset_w
    block_row = np.clip(rows // s, 0, blocks_h - 1)
    block_col = np.clip(cols // s, 0, blocks_w - 1)
    in_grid = ((rows >= 0) & (rows < blocks_h * s))[:, None] & ((cols >= 0) & (cols < blocks_w * s))[None, :]
    block = tf.constant(block_row[:, None] * blocks_w + block_col[None, :], tf.int32)  # [H, W]
    i = tf.constant(np.broadcast_to((rows % s)[:, None], (height, width)), tf.int32)
    j = tf.constant(np.broadcast_to((cols % s)[None, :], (height, width)), tf.int32)
    flip_key, sign_key = (tf.random.experimental.stateless_fold_in(key, m) for m in range(2))
    flip = tf.gather(tf.random.stateless_uniform(tf.stack([n, blocks_h * blocks_w]), flip_key) < 0.5,
                     block, axis=1)  # [n, H, W]
    signs = tf.gather(_signs(tf.stack([n, blocks_h * blocks_w, channels]), sign_key), block, axis=1)
    i, j = tf.where(flip, j[None], i[None]), tf.where(flip, i[None], j[None])
    pattern = _pattern(i, j, tf.constant(s), max(height, width) // 2 + 2)
    delta = tf.where(tf.constant(in_grid)[None], pattern, 0.0)[..., None] * signs
    return delta * eps / (_l2_norm(delta) + _TINY)


def _square_run(model_fn, x, y, eps, norm, n_queries, p_init, rescale, clip_min, clip_max, key):
    """One Square Attack run on the whole batch x (float32, [B, H, W, C]).
    Returns (fooled [B] bool, x_best)."""
    batch, height, width, channels = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    start_key, loop_key = (tf.random.experimental.stateless_fold_in(key, m) for m in range(2))
    if norm == np.inf:
        stripes = _signs(tf.stack([batch, 1, width, channels]), start_key)
        x_best = tf.clip_by_value(x + eps * stripes, clip_min, clip_max)
    else:
        x_best = tf.clip_by_value(x + _l2_start(x, eps, start_key), clip_min, clip_max)
    margin_best = _margin(model_fn, x_best, y)
    side_max = min(height, width)

    def body(i, x_best, margin_best):
        idx = tf.where(margin_best > 0.0)  # still correctly classified: keep searching
        x_now, best_now = tf.gather_nd(x, idx), tf.gather_nd(x_best, idx)
        margin_now, y_now = tf.gather_nd(margin_best, idx), tf.gather_nd(y, idx)
        n = tf.shape(idx)[0]
        keys = [tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(
            loop_key, i), m) for m in range(6)]
        p = square_p_schedule(i, n_queries, p_init, rescale)
        side = tf.cast(tf.round(tf.sqrt(p * float(height * width))), tf.int32)
        if norm == np.inf:
            s = tf.clip_by_value(side, 1, side_max)
            mask = _window(_offsets(n, height - s, keys[0]), _offsets(n, width - s, keys[1]), s, height, width)
            proposal = best_now + mask * 2.0 * eps * _signs(tf.stack([n, 1, 1, channels]), keys[2])
            proposal = tf.clip_by_value(tf.clip_by_value(proposal, x_now - eps, x_now + eps), clip_min, clip_max)
        else:
            s = tf.maximum(side, 3)
            s = tf.minimum(s + 1 - s % 2, side_max - 1 + side_max % 2)  # odd, at most the image side
            top, left = _offsets(n, height - s, keys[0]), _offsets(n, width - s, keys[1])
            top2, left2 = _offsets(n, height - s, keys[2]), _offsets(n, width - s, keys[3])
            first, second = _window(top, left, s, height, width), _window(top2, left2, s, height, width)
            delta = best_now - x_now
            window_norms = tf.sqrt(tf.reduce_sum(tf.square(delta * first), axis=[1, 2], keepdims=True))
            image_norm = _l2_norm(delta)
            windows_norm = _l2_norm(delta * tf.maximum(first, second))
            flip = tf.random.stateless_uniform([n], keys[4]) < 0.5
            new = _eta(top, left, s, flip, height, width) * _signs(tf.stack([n, 1, 1, channels]), keys[5])
            new += delta * first / (_TINY + window_norms)
            budget = tf.sqrt(tf.maximum(eps ** 2 - tf.square(image_norm), 0.0) / float(channels)
                             + tf.square(windows_norm))
            new = new / (_TINY + tf.sqrt(tf.reduce_sum(tf.square(new), axis=[1, 2], keepdims=True))) * budget
            delta = delta * (1.0 - second)
            delta = delta * (1.0 - first) + new * first
            proposal = tf.clip_by_value(x_now + delta * eps / (_l2_norm(delta) + _TINY), clip_min, clip_max)
        margin = _margin(model_fn, proposal, y_now)
        accept = (margin < margin_now) | (margin <= 0.0)
        best_now = tf.where(accept[:, None, None, None], proposal, best_now)
        margin_now = tf.where(accept, margin, margin_now)
        return (i + 1, tf.tensor_scatter_nd_update(x_best, idx, best_now),
                tf.tensor_scatter_nd_update(margin_best, idx, margin_now))

    def cond(i, x_best, margin_best):
        return (i < n_queries) & tf.reduce_any(margin_best > 0.0)

    _, x_best, margin_best = tf.while_loop(cond, body, (tf.constant(0), x_best, margin_best))
    return margin_best <= 0.0, x_best


_square_compiled = tf.function(_square_run, reduce_retracing=True)


def square_attack(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_queries=5000,
                  p_init=0.8, n_restarts=1, rescale_schedule=True, seed=0):
    """Square Attack, untargeted; see the module docstring.

    x: images [B, H, W, C] (channels last) in [clip_min, clip_max]. eps (>= 0), norm (2 or
    np.inf). y: labels (None: the predictions). n_queries (>= 1): iterations per restart;
    p_init in (0, 1]; n_restarts (>= 1) runs on the examples not yet fooled; rescale_schedule:
    scale the p schedule to n_queries (see the module docstring); seed: an int >= 0.
    Returns x_adv (x's shape and dtype): the misclassified point found, else x.
    """
    _checks.check_integer("n_queries", n_queries, 1)
    x, x32, y = _validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_queries, n_restarts, 1, 0.75,
                          seed)
    if x.shape.rank != 4 or None in x.shape[1:]:
        raise ValueError(f"square_attack needs images [B, H, W, C] with known H, W, C, got shape {x.shape}.")
    if not 0.0 < float(p_init) <= 1.0:
        raise ValueError(f"p_init must be in (0, 1], got {p_init!r}.")
    if clip_min is None or clip_max is None:
        raise ValueError("square_attack needs both clip_min and clip_max.")
    hyper = dict(eps=_checks.to_float32(eps), norm=norm, n_queries=tf.constant(int(n_queries)),
                 p_init=_checks.to_float32(p_init), rescale=bool(rescale_schedule),
                 clip_min=_checks.to_float32(clip_min), clip_max=_checks.to_float32(clip_max))
    run = _square_run if tf.inside_function() else _square_compiled
    correct = tf.equal(tf.argmax(tf.cast(model_fn(x32), tf.float32), axis=-1), y)
    found = tf.zeros_like(correct)
    x_adv = x32
    for restart in range(int(n_restarts)):
        active = correct & ~found
        if tf.executing_eagerly() and not bool(tf.reduce_any(active)):
            break
        idx = tf.where(active)
        key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 2], tf.int64), restart)
        fooled, x_best = run(model_fn, tf.gather_nd(x32, idx), tf.gather_nd(y, idx), key=key, **hyper)
        rows = tf.boolean_mask(idx, fooled)
        x_adv = tf.tensor_scatter_nd_update(x_adv, rows, tf.boolean_mask(x_best, fooled))
        found = tf.tensor_scatter_nd_update(found, rows, tf.ones(tf.shape(rows)[:1], tf.bool))
    return tf.stop_gradient(tf.where(found[:, None, None, None], tf.cast(x_adv, x.dtype), x))
