"""Carlini-Wagner L2 (Carlini & Wagner 2017, "Towards evaluating the robustness of NNs").

CleverHans 4.0.0's tf2 `carlini_wagner_l2` fails under Keras 3 and, behind that, has a
constant-shape bug (issue #1205) and ignores `targeted`. This is the same attack with the
same name, keyword names and defaults, written with CleverHans v3's semantics
(cleverhans/attacks/carlini_wagner_l2.py, which the PGN paper's reference code ran with
max_iterations=100; checked against its source):

- tanh box: x_adv = (tanh(w0 + modifier) + 1) / 2 * (clip_max - clip_min) + clip_min with
  w0 = atanh((2 * unit(x) - 1) * 0.999999), unit(x) = x rescaled to [0, 1] (the 0.999999 keeps
  atanh finite at the box's faces);
- per-example objective ||x_adv - x0||^2 + c * f(x_adv), where x0 = the tanh image of w0
  (within ~1e-6 of x per pixel, as v3 and foolbox measure it) and
  f = max(Z_y - max_{j != y} Z_j + confidence, 0), targeted f = max(max_{j != t} Z_j - Z_t
  + confidence, 0); the batch's summed objective is minimised by Adam on the modifier;
- per example, "adversarial" means argmax(Z with Z_y += confidence) != y (targeted: argmax(Z
  with Z_t -= confidence) == t), tested on each iterate before its Adam step; the best (smallest
  L2) adversarial iterate over all binary-search steps is returned, x itself where none was;
- binary search on c per example: success -> upper = min(upper, c), failure -> lower =
  max(lower, c); then c = (lower + upper) / 2 if upper < 1e9, else c * 10 (failure only);
  with binary_search_steps >= 10 the last step reruns at c = upper;
- early abort (abort_early): every max(max_iterations // 10, 1) iterations the batch's summed
  loss must have dropped below 0.9999 times its value at the previous check, else the Adam run
  of that binary-search step stops. As in v3 the check is on the whole chunk, not per example
  (so results depend on how x is chunked), and the first check compares with 1e6, not +inf
  (a chunk whose summed loss starts above 1e6, e.g. at c ~ 1e10, aborts at once; foolbox
  starts at +inf). Iterates from the step at which it aborts are not recorded, as in v3.

Adam is a few lines on tensors carried by the tf.while_loop (TF1 AdamOptimizer's update, beta1
0.9, beta2 0.999, epsilon 1e-8), not a Keras optimizer: v3 resets Adam's moments and step count
at every binary-search step, which here is just fresh zeros; a Keras optimizer would need a
variable per input shape (not creatable inside a compiled function after its first trace, and
the last chunk is often smaller) and assign ops to reset its slots and iteration count.

Compilation as in attacks/fgm.py: called inside a tf.function the attack adds its ops there,
else it runs through a module-level tf.function traced once per model_fn, flag set and chunk
shape (hyper-parameters are tensors: a new learning rate does not retrace). One call of that
function attacks one chunk of batch_size examples: a tf.while_loop over binary-search steps
around a tf.while_loop over iterations, all per-example state in tensors. x is split into
chunks in Python, so inside a tf.function x needs a known batch size to be chunked (an unknown
one runs as one chunk).

The model runs on float32 inputs and its logits are cast to float32: under mixed_float16 CW
fails outright on float16 logits (docs/methods.md section 5).
"""

import numbers

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.fgm import predicted_labels
from attacks.losses import margin_loss

# CleverHans v3's constants.
_ATANH_SHRINK = 0.999999
_NOT_FOUND = 1e10  # best squared L2 / upper bound on c before any success
_UPPER_KNOWN = 1e9  # upper < this: an upper bound on c exists, bisect
_FIRST_PREVIOUS_LOSS = 1e6  # the early-abort reference before the first check
_ABORT_RATIO = 0.9999
_REPEAT_FROM_STEPS = 10  # binary_search_steps >= 10: the last step reruns at c = upper
# TF1 AdamOptimizer's defaults, which v3 used.
_BETA1, _BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8


def _from_tanh_space(w, clip_min, clip_max):
    return (tf.tanh(w) + 1.0) / 2.0 * (clip_max - clip_min) + clip_min


def _is_adversarial(logits, y, targeted, confidence):
    """v3's success test: confidence shifts only the label's logit, then argmax (ties: first)."""
    is_label = tf.one_hot(y, tf.shape(logits)[-1], dtype=tf.float32)
    if targeted:
        return tf.equal(tf.argmax(logits - confidence * is_label, axis=-1), y)
    return tf.not_equal(tf.argmax(logits + confidence * is_label, axis=-1), y)


def _cw_graph(model_fn, x, y, targeted, clip_min, clip_max, binary_search_steps,
              max_iterations, abort_early, confidence, initial_const, learning_rate):
    x32 = tf.cast(x, tf.float32)
    y = tf.cast(predicted_labels(model_fn, x32) if y is None else y, tf.int64)
    example_shape = [-1] + [1] * (x32.shape.rank - 1)
    axes = list(range(1, x32.shape.rank))
    batch = tf.shape(x32)[0]

    unit = tf.clip_by_value((x32 - clip_min) / (clip_max - clip_min), 0.0, 1.0)
    w0 = tf.atanh((2.0 * unit - 1.0) * _ATANH_SHRINK)
    x0 = _from_tanh_space(w0, clip_min, clip_max)
    abort_every = tf.maximum(max_iterations // 10, 1)

    def loss_and_gradient(modifier, const):
        with tf.GradientTape() as tape:
            tape.watch(modifier)
            x_new = _from_tanh_space(w0 + modifier, clip_min, clip_max)
            logits = tf.cast(model_fn(x_new), tf.float32)
            squared_l2 = tf.reduce_sum(tf.square(x_new - x0), axis=axes)
            # margin_loss = max_{j != y} Z_j - Z_y: positive once y has lost (untargeted).
            margin = margin_loss(labels=y, logits=logits)
            f = tf.maximum((margin if targeted else -margin) + confidence, 0.0)
            loss = tf.reduce_sum(const * f) + tf.reduce_sum(squared_l2)
        return loss, tape.gradient(loss, modifier), x_new, logits, squared_l2

    def adam_run(const, best_l2, best_attack):
        """One binary-search step: Adam from modifier = 0 with fresh moments (v3's reset)."""

        def body(i, modifier, m, v, previous, stop, found, best_l2, best_attack):
            loss, grad, x_new, logits, squared_l2 = loss_and_gradient(modifier, const)
            if abort_early:
                check = tf.equal(i % abort_every, 0)
                stop = check & (loss > previous * _ABORT_RATIO)
                previous = tf.where(check, loss, previous)
            adversarial = _is_adversarial(logits, y, targeted, confidence) & ~stop
            found |= adversarial
            better = adversarial & (squared_l2 < best_l2)
            best_l2 = tf.where(better, squared_l2, best_l2)
            best_attack = tf.where(tf.reshape(better, example_shape), x_new, best_attack)

            t = tf.cast(i + 1, tf.float32)
            m = _BETA1 * m + (1.0 - _BETA1) * grad
            v = _BETA2 * v + (1.0 - _BETA2) * tf.square(grad)
            step = learning_rate * tf.sqrt(1.0 - _BETA2 ** t) / (1.0 - _BETA1 ** t)
            modifier -= step * m / (tf.sqrt(v) + _ADAM_EPSILON)
            return i + 1, modifier, m, v, previous, stop, found, best_l2, best_attack

        zeros = tf.zeros_like(x32)
        start = (tf.constant(0), zeros, zeros, zeros, tf.constant(_FIRST_PREVIOUS_LOSS),
                 tf.constant(False), tf.zeros([batch], tf.bool), best_l2, best_attack)
        out = tf.while_loop(lambda i, *rest: (i < max_iterations) & ~rest[4], body, start)
        return out[6], out[7], out[8]

    def binary_search_step(step, lower, upper, const, best_l2, best_attack):
        rerun = (binary_search_steps >= _REPEAT_FROM_STEPS) & tf.equal(step, binary_search_steps - 1)
        const = tf.where(rerun, upper, const)
        found, best_l2, best_attack = adam_run(const, best_l2, best_attack)
        upper = tf.where(found, tf.minimum(upper, const), upper)
        lower = tf.where(found, lower, tf.maximum(lower, const))
        const = tf.where(upper < _UPPER_KNOWN, (lower + upper) / 2.0,
                         tf.where(found, const, const * 10.0))
        return step + 1, lower, upper, const, best_l2, best_attack

    start = (tf.constant(0), tf.zeros([batch]), tf.fill([batch], _NOT_FOUND),
             tf.fill([batch], initial_const), tf.fill([batch], _NOT_FOUND), x32)
    _, _, _, _, best_l2, best_attack = tf.while_loop(
        lambda step, *_: step < binary_search_steps, binary_search_step, start)
    # Where nothing was found, x itself (bit for bit, whatever its dtype), as CleverHans.
    found = tf.reshape(best_l2 < _NOT_FOUND, example_shape)
    return tf.stop_gradient(tf.where(found, tf.cast(best_attack, x.dtype), x))


# reduce_retracing: a last, smaller chunk relaxes the batch axis once, not per size.
_cw_compiled = tf.function(_cw_graph, reduce_retracing=True)


def _check_positive(name, value):
    known = _checks.static_value(value)
    if known is not None and np.any(known <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}.")


def _check_box(x, clip_min, clip_max):
    if clip_min is None or clip_max is None:
        raise ValueError("carlini_wagner_l2 needs both clip_min and clip_max (its tanh box).")
    _checks.check_clip(clip_min, clip_max)
    low, high = _checks.static_value(clip_min), _checks.static_value(clip_max)
    if low is not None and high is not None and np.any(low == high):
        raise ValueError(f"clip_min must be < clip_max, got {clip_min!r} == {clip_max!r}.")
    # As CleverHans 4 (v3 clipped silently); only checkable when x is known now.
    values = _checks.static_value(x)
    if values is not None and low is not None and high is not None:
        # In x's dtype: float32(0.8) > 0.8, yet clipping a float32 x to 0.8 gives it.
        if np.any(values < low.astype(values.dtype)) or np.any(values > high.astype(values.dtype)):
            raise ValueError(f"x must lie in [clip_min, clip_max] = [{clip_min}, {clip_max}].")


def carlini_wagner_l2(model_fn, x, y=None, targeted=False, batch_size=128, clip_min=0.0,
                      clip_max=1.0, binary_search_steps=5, max_iterations=1000,
                      abort_early=True, confidence=0.0, initial_const=1e-2,
                      learning_rate=5e-3):
    """Carlini-Wagner L2: the smallest-L2 adversarial found by CW's tanh-box Adam search.

    model_fn: x -> logits. x: a batch in [clip_min, clip_max] (ValueError otherwise, when x
    is known). y: integer labels [B] (one-hot [B, K] is accepted, as CleverHans); None uses
    the model's predictions. targeted: reach class y instead of leaving it (y required).
    batch_size: examples per compiled call (x is split in Python). binary_search_steps
    (>= 1), max_iterations (>= 0), abort_early, confidence (>= 0), initial_const (> 0),
    learning_rate (> 0): as in CleverHans (see the module docstring; the PGN paper's
    evaluation uses max_iterations=100 and the other defaults).
    Returns x_adv with x's shape and dtype; x itself where no adversarial was found, so
    success is best read from the model's prediction on x_adv. Not differentiable (wrapped
    in tf.stop_gradient).
    """
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    _checks.check_integer("binary_search_steps", binary_search_steps, 1)
    _checks.check_integer("max_iterations", max_iterations, 0)
    _checks.check_non_negative("confidence", confidence)
    _check_positive("initial_const", initial_const)
    _check_positive("learning_rate", learning_rate)
    _checks.check_target(targeted, y)
    x = tf.convert_to_tensor(x)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(f"x must be a batch with a known rank >= 2, got shape {x.shape}.")
    _check_box(x, clip_min, clip_max)
    if y is not None:
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2:
            y = tf.argmax(y, axis=-1)
        if y.shape.rank != 1:
            raise ValueError(f"y must be integer labels [B] or one-hot [B, K], got shape {y.shape}.")
        if x.shape[0] is not None and y.shape[0] is not None and x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y hold {x.shape[0]} and {y.shape[0]} examples.")

    run = _cw_graph if tf.inside_function() else _cw_compiled
    hyper = dict(targeted=bool(targeted), clip_min=_checks.to_float32(clip_min),
                 clip_max=_checks.to_float32(clip_max),
                 binary_search_steps=tf.cast(binary_search_steps, tf.int32),
                 max_iterations=tf.cast(max_iterations, tf.int32), abort_early=bool(abort_early),
                 confidence=_checks.to_float32(confidence),
                 initial_const=_checks.to_float32(initial_const),
                 learning_rate=_checks.to_float32(learning_rate))
    n = x.shape[0]
    if n is None or n <= batch_size:
        return run(model_fn, x, y, **hyper)
    chunks = [run(model_fn, x[i:i + batch_size], None if y is None else y[i:i + batch_size], **hyper)
              for i in range(0, n, batch_size)]
    return tf.concat(chunks, axis=0)
