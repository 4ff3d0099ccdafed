"""Auto-PGD (Croce & Hein 2020, Algorithm 1) written once against keras.ops: APGD-CE, APGD-DLR and
APGD-T on TensorFlow, JAX and PyTorch.

Same API, algorithm and defaults as attacks/apgd.py (whose docstring describes them), with two
differences: the random starts come from NumPy on the host (attacks/keras_ops/common.py), so every
backend starts from the same points; and the functions here take ``return_count=True`` to also
return the number of images the model evaluated (AutoAttack's forward-pass count).
"""
from __future__ import annotations

import numpy as np
from keras import ops

from attacks import backends
from attacks.keras_ops import common
from attacks.keras_ops.checks import validate
from attacks.schedules import checkpoint_schedule


def _apgd_run(params, x, y, targets, start, eps, rho, is_checkpoint, window, clip_min, clip_max, *, call,
              norm, loss, eot_iter):
    """One APGD run from x + eps * start (start: unit-norm noise) on the whole batch.
    Returns (fooled [B] bool, x_fooled: the last misclassified iterate, else x)."""
    backend = backends.current()
    rank = len(x.shape)

    def total_loss(x_in):
        logits = ops.cast(call(params, x_in), "float32")
        if loss == "ce":
            values = common.cross_entropy(y, logits)
        elif loss == "dlr":
            values = common.dlr(y, logits)
        else:
            values = common.targeted_dlr(y, targets, logits)
        # Summed over the batch: each example's loss depends on its own input only.
        return ops.sum(values), (values, logits)

    gradient = backend.value_and_grad(total_loss)

    def loss_and_gradient(x_in):
        _, (values, logits), grad = gradient(x_in)
        if eot_iter > 1:  # a Python int: one model call in the graph unless EOT is asked for
            def draw(_, carry):
                _, (v, lg), g = gradient(x_in)
                return carry[0] + v, carry[1] + g, lg
            values, grad, logits = ops.fori_loop(1, eot_iter, draw, (values, grad, logits))
            values, grad = values / float(eot_iter), grad / float(eot_iter)
        misclassified = ops.not_equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), y)
        return values, grad, misclassified

    def where(mask, a, b):
        return ops.where(common.per_example(mask, rank), a, b)

    x_adv = common.project(x + eps * start, x, norm, eps, clip_min, clip_max)
    loss_now, grad, fooled = loss_and_gradient(x_adv)
    step = ops.full(ops.shape(loss_now), 1.0) * (2.0 * eps)  # the reference's initial step 2 eps
    state = (ops.convert_to_tensor(0, "int32"), x_adv, x_adv, grad, loss_now, x_adv, grad, loss_now, fooled,
             where(fooled, x_adv, x), step, ops.zeros_like(loss_now), ops.ones_like(fooled), loss_now)
    n_iter = ops.shape(is_checkpoint)[0]  # may be unknown while tracing (TensorFlow relaxes shapes)

    def body(i, x_adv, x_old, grad, loss_prev, x_best, grad_best, loss_best, fooled, x_fooled, step, rises,
             halved_last, loss_best_last):
        a = ops.where(i > 0, 0.75, 1.0)
        direction = ops.sign(grad) if norm == np.inf else common.normalize(grad, 2)
        z = common.project(x_adv + common.per_example(step, rank) * direction, x, norm, eps, clip_min, clip_max)
        x_new = common.project(x_adv + a * (z - x_adv) + (1.0 - a) * (x_adv - x_old), x, norm, eps,
                               clip_min, clip_max)
        loss_new, grad_new, misclassified = loss_and_gradient(x_new)
        fooled = ops.logical_or(fooled, misclassified)
        x_fooled = where(misclassified, x_new, x_fooled)
        better = loss_new > loss_best
        x_best, grad_best = where(better, x_new, x_best), where(better, grad_new, grad_best)
        loss_best = ops.where(better, loss_new, loss_best)
        rises = rises + ops.cast(loss_new > loss_prev, "float32")
        check = ops.take(is_checkpoint, i)
        k = ops.cast(ops.take(window, i), "float32")
        oscillating = rises <= k * rho  # condition 1: too few of the window's steps raised the loss
        stalled = ops.logical_and(ops.logical_not(halved_last), loss_best_last >= loss_best)  # condition 2
        halve = ops.logical_and(check, ops.logical_or(oscillating, stalled))
        return (i + 1, where(halve, x_best, x_new), x_adv, where(halve, grad_best, grad_new), loss_new, x_best,
                grad_best, loss_best, fooled, x_fooled, ops.where(halve, step / 2.0, step),
                ops.where(check, ops.zeros_like(rises), rises), ops.where(check, halve, halved_last),
                ops.where(check, loss_best, loss_best_last))

    out = ops.while_loop(lambda i, *_: i < n_iter, body, state)
    return out[8], backend.stop_gradient(out[9])


def start_noise(rng, shape, norm):
    """The reference's start direction before scaling: U[-1, 1] (L-inf) or Gaussian (L2), unit norm."""
    t = rng.uniform(-1.0, 1.0, shape) if norm == np.inf else rng.standard_normal(shape)
    flat = t.reshape(len(t), -1)
    scale = np.abs(flat).max(1) if norm == np.inf else np.sqrt((flat ** 2).sum(1))
    return (t / (scale.reshape((-1,) + (1,) * (t.ndim - 1)) + common.TINY)).astype(np.float32)


def _attack(model_fn, x, y, target_ranks, eps, norm, loss, n_iter, n_restarts, eot_iter, rho, clip_min, clip_max,
            seed):
    """Restarts (and targets) on the examples not yet fooled; returns (x_adv float32, found [N] bool,
    images evaluated)."""
    logits = common.logits_of(model_fn, x)
    classes = logits.shape[-1]
    if loss == "dlr" and classes < 3:
        raise ValueError(f"the DLR loss needs >= 3 classes, the model has {classes}.")
    if loss == "dlr-targeted" and classes < 4:
        raise ValueError(f"the targeted DLR loss needs >= 4 classes, the model has {classes}.")
    is_checkpoint, window = checkpoint_schedule(int(n_iter))
    run = common.compiled(model_fn, _apgd_run, norm=norm, loss=loss, eot_iter=int(eot_iter))
    ranked = np.argsort(-logits, axis=-1, kind="stable")
    correct = logits.argmax(-1) == y  # misclassified examples are not attacked
    found = np.zeros(len(y), bool)
    x_adv, count = x.copy(), len(x)
    scalars = [np.float32(v) for v in (eps, rho)]
    for rank in target_ranks:
        for restart in range(int(n_restarts)):
            idx = np.flatnonzero(correct & ~found)
            if not len(idx):
                break
            size = common.padded_size(len(idx))
            targets = ranked[idx, rank] if rank else y[idx]
            noise = start_noise(common.host_rng(seed, 0, rank or 0, restart), x[idx].shape, norm)
            arrays = [common.pad(a, size) for a in (x[idx], y[idx].astype(np.int32), targets.astype(np.int32), noise)]
            fooled, x_fooled = run(*[ops.convert_to_tensor(a) for a in arrays + scalars],
                                   ops.convert_to_tensor(is_checkpoint), ops.convert_to_tensor(window),
                                   ops.convert_to_tensor(np.float32(clip_min)), ops.convert_to_tensor(np.float32(clip_max)))
            fooled = common.to_numpy(fooled)[:len(idx)]
            x_adv[idx[fooled]] = common.to_numpy(x_fooled)[:len(idx)][fooled]
            found[idx[fooled]] = True
            count += len(idx) * (int(n_iter) + 1) * int(eot_iter)
    return x_adv, found, count


def finish(x, x_adv, found, count, return_count):
    """Fooled examples get their float32 point, the others x itself (bit for bit)."""
    out = np.where(found.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv.astype(x.dtype), x)
    return (out, count) if return_count else out


def apgd(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, loss="ce", n_iter=100, n_restarts=1,
         eot_iter=1, rho=0.75, seed=0, return_count=False):
    """APGD-CE (loss="ce") or APGD-DLR (loss="dlr"), untargeted, as attacks.apgd.apgd. Returns x_adv
    (NumPy, x's shape and dtype): the misclassified point found, else x; with return_count, also the
    number of images the model evaluated."""
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}.")
    x, x32, y = validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter, rho, seed)
    return finish(x, *_attack(model_fn, x32, y, [None], eps, norm, loss, n_iter, n_restarts, eot_iter, rho,
                              clip_min, clip_max, seed), return_count)


def apgd_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_target_classes=9, n_iter=100,
                  n_restarts=1, eot_iter=1, rho=0.75, seed=0, return_count=False):
    """APGD-T with the targeted DLR loss, as attacks.apgd.apgd_targeted (needs >= 4 classes)."""
    from attacks import _checks
    _checks.check_integer("n_target_classes", n_target_classes, 1)
    x, x32, y = validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter, rho, seed)
    classes = common.logits_of(model_fn, x32[:1]).shape[-1]
    ranks = list(range(1, min(int(n_target_classes), classes - 1) + 1))
    return finish(x, *_attack(model_fn, x32, y, ranks, eps, norm, "dlr-targeted", n_iter, n_restarts, eot_iter,
                              rho, clip_min, clip_max, seed), return_count)
