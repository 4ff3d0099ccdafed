"""What the keras.ops attacks share: the eps-ball, the losses, host randomness, and running one
compiled loop per model on batches padded to a few sizes.

The math here is keras.ops only, so one code runs on TensorFlow, JAX and PyTorch; the backend's
part (input gradient, compilation) is attacks/backends. Semantics are those of the TensorFlow
modules (attacks/projection.py, attacks/apgd.py): the same ball, box, losses and floors.

Randomness is drawn on the host with NumPy, keyed on (seed, attack, target, restart), and passed
into the compiled loops as arrays, so that TensorFlow and JAX attack from the same random points
and, where the floating-point arithmetic agrees, return the same x_adv image for image.
"""
from __future__ import annotations

import functools
import weakref

import numpy as np
from keras import ops

from attacks import backends

TINY = 1e-12  # the reference's floor in normalisations and the DLR denominator
LOWEST = float(np.finfo(np.float32).min)


def per_example(values, rank):
    """[B] -> [B, 1, ..., 1] of rank ``rank``, to broadcast against a batch."""
    return ops.reshape(values, (-1,) + (1,) * (rank - 1))


def norms(v, norm):
    """Per-example L2 or L-inf norm over all non-batch axes, [B]."""
    axes = tuple(range(1, len(v.shape)))
    if norm == np.inf:
        return ops.max(ops.abs(v), axis=axes)
    return ops.sqrt(ops.sum(ops.square(v), axis=axes))


def normalize(v, norm):
    """v / (||v|| + 1e-12) per example (L-inf: divided by max |v|)."""
    return v / (per_example(norms(v, norm), len(v.shape)) + TINY)


def project(x_adv, x, norm, eps, clip_min, clip_max):
    """x_adv onto the eps-ball around x, then onto the box (attacks.projection.project)."""
    eta = x_adv - x
    if norm == np.inf:
        eta = ops.clip(eta, -eps, eps)
    else:
        squared = ops.sum(ops.square(eta), axis=tuple(range(1, len(eta.shape))), keepdims=True)
        eta = eta * ops.minimum(1.0, eps / ops.sqrt(ops.maximum(1e-12, squared)))
    return ops.clip(x + eta, clip_min, clip_max)


def pick(logits, labels):
    """logits[i, labels[i]], [B]."""
    return ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=-1)[:, 0]


def best_other(logits, labels):
    """max_{j != labels[i]} logits[i, j], [B]."""
    is_label = ops.one_hot(labels, logits.shape[-1]) > 0.5
    return ops.max(ops.where(is_label, LOWEST, logits), axis=-1)


def cross_entropy(labels, logits):
    """Sparse softmax cross-entropy from logits, per example."""
    return -pick(ops.log_softmax(logits, axis=-1), labels)


def dlr(labels, logits):
    """Croce & Hein 2020, eq. 6: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)."""
    top = ops.top_k(logits, 3)[0]
    return -(pick(logits, labels) - best_other(logits, labels)) / (top[:, 0] - top[:, 2] + TINY)


def targeted_dlr(labels, targets, logits):
    """Croce & Hein 2020, eq. 7: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    top = ops.top_k(logits, 4)[0]
    return -(pick(logits, labels) - pick(logits, targets)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + TINY)


def host_rng(seed, *ids):
    """NumPy's generator keyed on the seed and the ids (attack, target, restart, ...)."""
    return np.random.default_rng([int(seed), *[int(i) for i in ids]])


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def logits_of(model_fn, x):
    """float32 logits of a batch, as NumPy."""
    return to_numpy(ops.cast(model_fn(ops.convert_to_tensor(np.asarray(x, np.float32))), "float32"))


_COMPILED = weakref.WeakKeyDictionary()


def compiled(model_fn, run, **static):
    """``run(params, *arrays, call=..., **static)`` compiled once per model_fn, run and static
    settings; returns f(*arrays) that passes the model's current params."""
    backend = backends.current()
    key = (backends.name(), run, tuple(sorted(static.items())))
    try:
        cache = _COMPILED.setdefault(model_fn, {})
    except TypeError:  # not weak-referenceable: compiled afresh each call
        cache = {}
    if key not in cache:
        get_params, call = backend.model_caller(model_fn)
        cache[key] = get_params, backend.compile(functools.partial(run, call=call, **static))
    get_params, fn = cache[key]
    return lambda *arrays: fn(get_params(), *arrays)


def padded_size(n):
    """The batch size a loop runs at: n, or on backends that compile per shape (JAX) the next
    power of two, so that shrinking sets of active examples compile a few times, not per size."""
    if not backends.current().STATIC_SHAPES or n <= 1:
        return n
    return 1 << (n - 1).bit_length()


def pad(array, size):
    """array's rows repeated from its first to ``size`` rows (padding rows are valid inputs whose
    results are dropped)."""
    array = np.asarray(array)
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[:1], size - len(array), axis=0)])
