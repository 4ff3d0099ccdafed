"""Argument checks of the keras.ops attacks (attacks/_checks.py's rules: ValueError with a message),
on NumPy arrays: the keras.ops attacks take and return NumPy, whatever the backend."""
from __future__ import annotations

import numpy as np

from attacks import _checks
from attacks.keras_ops import common


def validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter, rho, seed):
    """(x as given, x as float32, labels int32 [B]); y None: the model's predictions."""
    _checks.check_norm(norm)
    if eps is None:
        raise ValueError("eps is required.")
    _checks.check_non_negative("eps", eps)
    _checks.check_clip(clip_min, clip_max)
    _checks.check_integer("n_iter", n_iter, 1)
    _checks.check_integer("n_restarts", n_restarts, 1)
    _checks.check_integer("eot_iter", eot_iter, 1)
    _checks.check_integer("seed", seed, 0)
    if not 0.0 <= float(rho) <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}.")
    if clip_min is None or clip_max is None:
        raise ValueError("the keras.ops attacks need both clip_min and clip_max.")
    x = np.asarray(common.to_numpy(x))
    if x.ndim < 2:
        raise ValueError(f"x must be a batch with rank >= 2, got shape {x.shape}.")
    x32 = x.astype(np.float32)
    labels = common.logits_of(model_fn, x32).argmax(-1) if y is None else np.asarray(common.to_numpy(y))
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    if labels.ndim != 1:
        raise ValueError(f"y must be integer labels [B] or one-hot [B, K], got shape {labels.shape}.")
    if len(labels) != len(x):
        raise ValueError(f"x and y hold {len(x)} and {len(labels)} examples.")
    return x, x32, labels.astype(np.int32)
