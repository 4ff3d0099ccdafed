"""Argument checks shared by the attacks: ValueError with a message, never assert.

Values are checked when they are known at trace time (Python numbers, numpy values,
eager or constant tensors). A hyper-parameter passed as a symbolic tensor inside a
tf.function cannot be read while tracing and is not checked.
"""

import sys

import numpy as np


def static_value(value):
    """Returns value as a numpy array if it is known now, else None."""
    if value is None:
        return None
    # TensorFlow only if it is loaded already: the keras.ops attacks check their arguments here too,
    # on backends where TensorFlow is not installed.
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.is_tensor(value):
        value = tf.get_static_value(value)
        if value is None:
            return None
    return np.asarray(value)


def check_norm(norm):
    try:
        ok = bool(norm == np.inf or norm == 2)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"norm must be np.inf or 2, got {norm!r}.")


def check_non_negative(name, value):
    known = static_value(value)
    if known is not None and np.any(known < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_iterations(nb_iter):
    check_integer("nb_iter", nb_iter, 0)


def check_integer(name, value, minimum):
    """An integer count (a Python int, or a tensor known at trace time) of at least ``minimum``."""
    known = static_value(value)
    if known is None:
        return
    if known.size != 1 or known != np.round(known) or known < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_step_within_ball(eps_iter, eps):
    """CleverHans's PGD asserts eps_iter <= eps; kept, as a ValueError."""
    step, radius = static_value(eps_iter), static_value(eps)
    if step is not None and radius is not None and np.any(step > radius):
        raise ValueError(f"eps_iter must be <= eps, got eps_iter={eps_iter!r}, eps={eps!r}.")


def check_clip(clip_min, clip_max):
    low, high = static_value(clip_min), static_value(clip_max)
    if low is not None and high is not None and np.any(low > high):
        raise ValueError(f"clip_min must be <= clip_max, got clip_min={clip_min!r}, clip_max={clip_max!r}.")


def check_target(targeted, y):
    # CleverHans would silently target the predicted class, which is a no-op attack.
    if targeted and y is None:
        raise ValueError("a targeted attack needs the target labels y.")


def check_rng(rng):
    """A tf.random.Generator, or anything with its normal(shape, dtype) and uniform(shape, minval,
    maxval, dtype) methods (such as training.distribute.ReplicaNoise), or None."""
    if rng is not None and not (callable(getattr(rng, "normal", None)) and callable(getattr(rng, "uniform", None))):
        raise TypeError(f"rng must be a tf.random.Generator or None, got {type(rng).__name__}.")


def to_float32(value):
    """A hyper-parameter as a float32 tensor (None stays None).

    Tensors, not Python floats, go into the compiled attacks, so a new eps does not retrace.
    """
    import tensorflow as tf

    return None if value is None else tf.cast(value, tf.float32)
