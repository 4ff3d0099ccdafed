"""FGM and PGD (Goodfellow et al. 2015; Madry et al. 2018) written once against keras.ops, with
CleverHans 4.0.0's signatures and numerics as attacks/fgm.py and attacks/pgd.py, for any Keras 3
backend: the input gradient and the compiled loop come from attacks/backends. PGD's random start
is drawn with NumPy from ``seed`` (the TensorFlow module's ``rng`` is a tf.random.Generator).
Inputs and outputs are NumPy; the default loss is the sparse softmax cross-entropy."""
from __future__ import annotations

import numpy as np
from keras import ops

from attacks import _checks, backends
from attacks.keras_ops import common


def _step(call, params, x, y, eps, norm, clip_min, clip_max, targeted):
    """x + the steepest-ascent step of length eps under ``norm`` (CleverHans's optimize_linear, its
    1e-6 floor on the L2 norm kept), clipped to the box."""
    def total(x_in):
        loss = ops.sum(common.cross_entropy(y, ops.cast(call(params, x_in), "float32")))
        return (-loss if targeted else loss), ()

    _, _, grad = backends.current().value_and_grad(total)(x)
    if norm == np.inf:
        step = ops.sign(grad)
    else:
        squared = ops.sum(ops.square(grad), axis=tuple(range(1, len(grad.shape))), keepdims=True)
        step = grad / ops.sqrt(ops.maximum(1e-12, squared))
    return ops.clip(x + eps * step, clip_min, clip_max)


def _fgm_run(params, x, y, eps, clip_min, clip_max, *, call, norm, targeted):
    return backends.current().stop_gradient(_step(call, params, x, y, eps, norm, clip_min, clip_max, targeted))


def _pgd_run(params, x, x_start, y, eps, eps_iter, nb_iter, clip_min, clip_max, *, call, norm, targeted):
    def body(i, x_adv):
        x_adv = _step(call, params, x_adv, y, eps_iter, norm, clip_min, clip_max, targeted)
        return i + 1, common.project(x_adv, x, norm, eps, clip_min, clip_max)

    _, x_adv = ops.while_loop(lambda i, _: i < nb_iter, body, (ops.convert_to_tensor(0, "int32"), x_start))
    return backends.current().stop_gradient(x_adv)


def _prepare(model_fn, x, y, targeted, clip_min, clip_max):
    _checks.check_clip(clip_min, clip_max)
    _checks.check_target(targeted, y)
    if clip_min is None or clip_max is None:
        raise ValueError("the keras.ops attacks need both clip_min and clip_max.")
    x = np.asarray(common.to_numpy(x))
    x32 = x.astype(np.float32)
    labels = common.logits_of(model_fn, x32).argmax(-1) if y is None else np.asarray(common.to_numpy(y))
    return x, x32, labels.astype(np.int32)


def fast_gradient_method(model_fn, x, eps, norm, clip_min=0.0, clip_max=1.0, y=None, targeted=False):
    """FGM as attacks.fgm.fast_gradient_method (cross-entropy loss): x + eps * the steepest-ascent
    direction under ``norm`` (np.inf or 2), clipped to the box. Returns NumPy, x's shape and dtype."""
    _checks.check_norm(norm)
    _checks.check_non_negative("eps", eps)
    x, x32, y = _prepare(model_fn, x, y, targeted, clip_min, clip_max)
    run = common.compiled(model_fn, _fgm_run, norm=np.inf if norm == np.inf else 2, targeted=bool(targeted))
    out = run(*[ops.convert_to_tensor(a) for a in (x32, y, np.float32(eps), np.float32(clip_min),
                                                   np.float32(clip_max))])
    return common.to_numpy(out).astype(x.dtype)


def projected_gradient_descent(model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=0.0, clip_max=1.0, y=None,
                               targeted=False, rand_init=None, rand_minmax=None, seed=0):
    """PGD as attacks.pgd.projected_gradient_descent (cross-entropy loss): nb_iter FGM steps of
    eps_iter, each projected onto the eps-ball and the box; rand_init starts uniformly in the ball
    of radius rand_minmax (default eps), drawn from ``seed``. Returns NumPy, x's shape and dtype."""
    _checks.check_norm(norm)
    _checks.check_non_negative("eps", eps)
    _checks.check_non_negative("eps_iter", eps_iter)
    _checks.check_step_within_ball(eps_iter, eps)
    _checks.check_iterations(nb_iter)
    x, x32, y = _prepare(model_fn, x, y, targeted, clip_min, clip_max)
    norm = np.inf if norm == np.inf else 2
    start = x32
    if rand_init:
        radius = eps if rand_minmax is None else rand_minmax
        rng = common.host_rng(seed, 3)
        if norm == np.inf:
            eta = radius * rng.uniform(-1.0, 1.0, x.shape)
        else:  # uniform in the L2 ball (attacks.projection.random_lp_vector)
            flat = rng.standard_normal((len(x), x[0].size))
            flat /= np.sqrt((flat ** 2).sum(1, keepdims=True))
            eta = radius * (rng.uniform(size=(len(x), 1)) ** (1.0 / x[0].size) * flat).reshape(x.shape)
        start = common.to_numpy(common.project(ops.convert_to_tensor(x32 + eta.astype(np.float32)),
                                               ops.convert_to_tensor(x32), norm, np.float32(eps),
                                               np.float32(clip_min), np.float32(clip_max)))
    run = common.compiled(model_fn, _pgd_run, norm=norm, targeted=bool(targeted))
    out = run(*[ops.convert_to_tensor(a) for a in (x32, start.astype(np.float32), y, np.float32(eps),
                                                   np.float32(eps_iter), np.int32(nb_iter), np.float32(clip_min),
                                                   np.float32(clip_max))])
    return common.to_numpy(out).astype(x.dtype)
