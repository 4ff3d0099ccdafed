"""The eps-ball, shared by FGM, PGD, MIM, the generators and L2L.

"Inside the eps-ball" means one thing across the project: `project` maps a point onto the
ball of radius eps around x (L2 over all non-batch axes, or L-inf), then onto the box
[clip_min, clip_max]. All arithmetic is float32, whatever the input dtype: a perturbation
norm in float16 loses the small steps the attacks take.

Semantics follow cleverhans/tf2/utils.py (clip_eta, random_lp_vector) so that results
agree with CleverHans 4.0.0 to float32 rounding.
"""

import numpy as np
import tensorflow as tf

from attacks import _checks

# CleverHans's floor on the squared L2 norm. It sits inside the sqrt so that the gradient
# of the projection stays finite at eta = 0; the norm itself is floored at 1e-6.
SQUARED_NORM_FLOOR = 1e-12


def non_batch_axes(t):
    """The axes to reduce over for a per-example quantity."""
    rank = t.shape.rank
    if rank is None:
        return tf.range(1, tf.rank(t))
    return list(range(1, rank))


def l2_norm(x):
    """Per-example L2 norm over all non-batch axes, float32 of shape [B].

    No floor: this is the quantity reported, not one to differentiate at 0.
    """
    x = tf.cast(x, tf.float32)
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=non_batch_axes(x)))


def clip_eta(eta, norm, eps):
    """Projects the perturbation eta onto the eps-ball; norm is np.inf or 2.

    Clip, not normalise: a perturbation already inside the ball is left as it is.
    Returns eta's dtype, computed in float32.
    """
    _checks.check_norm(norm)
    eta = tf.convert_to_tensor(eta)
    eta32 = tf.cast(eta, tf.float32)
    eps = tf.cast(eps, tf.float32)
    if norm == np.inf:
        clipped = tf.clip_by_value(eta32, -eps, eps)
    else:
        squared = tf.reduce_sum(tf.square(eta32), non_batch_axes(eta32), keepdims=True)
        length = tf.sqrt(tf.maximum(SQUARED_NORM_FLOOR, squared))
        clipped = eta32 * tf.minimum(1.0, eps / length)
    return tf.cast(clipped, eta.dtype)


def clip_to_box(x, clip_min=None, clip_max=None):
    """Clips x to [clip_min, clip_max]; either bound may be None (no bound on that side)."""
    if clip_min is not None and clip_max is not None:
        return tf.clip_by_value(x, tf.cast(clip_min, x.dtype), tf.cast(clip_max, x.dtype))
    if clip_min is not None:
        return tf.maximum(x, tf.cast(clip_min, x.dtype))
    if clip_max is not None:
        return tf.minimum(x, tf.cast(clip_max, x.dtype))
    return x


def project(x_adv, x, norm, eps, clip_min=None, clip_max=None):
    """Projects x_adv onto the eps-ball around x, then onto the box [clip_min, clip_max].

    Returns x_adv's dtype, computed in float32. The box comes second, as in CleverHans:
    for inputs inside the box the result is then inside both.
    """
    x_adv = tf.convert_to_tensor(x_adv)
    x32 = tf.cast(x, tf.float32)
    eta = clip_eta(tf.cast(x_adv, tf.float32) - x32, norm, eps)
    return tf.cast(clip_to_box(x32 + eta, clip_min, clip_max), x_adv.dtype)


def random_lp_vector(shape, norm, eps, rng=None):
    """Samples uniformly from the eps-ball, float32; shape is [B, ...] (a tensor is fine).

    L-inf: uniform in [-eps, eps] per coordinate. L2: as CleverHans's random_lp_vector
    (Calafiore et al. 1998): a Gaussian direction normalised to the sphere, scaled by
    u^(1/d) with u ~ U[0, 1] and d the number of coordinates per example.
    rng: a tf.random.Generator (its state can be checkpointed) or an object with its normal and
      uniform methods; None uses tf.random ops.
    """
    _checks.check_norm(norm)
    shape = tf.cast(shape, tf.int32)
    eps = tf.cast(eps, tf.float32)

    def uniform(s, low, high):
        if rng is None:
            return tf.random.uniform(s, low, high, dtype=tf.float32)
        return rng.uniform(s, low, high, dtype=tf.float32)

    def normal(s):
        return tf.random.normal(s, dtype=tf.float32) if rng is None else rng.normal(s, dtype=tf.float32)

    if norm == np.inf:
        # eps * U[-1, 1] rather than U[-eps, eps]: also valid for eps = 0.
        return eps * uniform(shape, -1.0, 1.0)
    batch, dim = shape[0], tf.reduce_prod(shape[1:])
    direction = normal(tf.stack([batch, dim]))
    direction /= tf.sqrt(tf.reduce_sum(tf.square(direction), axis=-1, keepdims=True))
    radius = tf.pow(uniform(tf.stack([batch, 1]), 0.0, 1.0), 1.0 / tf.cast(dim, tf.float32))
    return eps * tf.reshape(radius * direction, shape)
