"""The step-size checkpoints of APGD (Croce & Hein 2020, section 3.2), in NumPy: shared by the
TensorFlow attack (attacks/apgd.py) and the keras.ops one (attacks/keras_ops/apgd.py)."""

import numpy as np


def checkpoint_schedule(n_iter):
    """The reference's checkpoints as (is_checkpoint[n_iter] bool, window[n_iter] int32): at
    0-based iteration i, is_checkpoint[i] says whether the step-size test runs, window[i] how many
    steps the window it closes holds."""
    is_checkpoint = np.zeros(n_iter, bool)
    window = np.zeros(n_iter, np.int32)
    k = max(int(0.22 * n_iter), 1)
    k_min, k_decrement = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    i = k - 1
    while i < n_iter:
        is_checkpoint[i], window[i] = True, k
        k = max(k - k_decrement, k_min)
        i += k
    return is_checkpoint, window
