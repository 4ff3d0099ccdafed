"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Algorithm 1), L2 and L-inf, as AutoAttack runs it.

Public API (model_fn: x -> logits, x in [clip_min, clip_max]; eps is keyword-only and required):

    apgd(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, loss="ce",
         n_iter=100, n_restarts=1, eot_iter=1, rho=0.75, seed=0) -> x_adv
    apgd_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None,
                  n_target_classes=9, n_iter=100, n_restarts=1, eot_iter=1, rho=0.75, seed=0) -> x_adv

x_adv has x's shape and dtype. Per example it is the last iterate (over all restarts and
targets) that the model misclassified; where no iterate was misclassified it is x itself (as the
original's perturb(best_loss=False)), so success is read off the model's prediction on x_adv.
Every x_adv lies in the eps-ball (attacks.projection.project) and the box.

The algorithm, as the reference code (github fra31/auto-attack, autopgd_base.py; read, not
copied) runs it:
- start: x + eps * t / ||t|| (L-inf: t ~ U[-1, 1]^d scaled to max |t| = 1; L2: t Gaussian), clipped
  to the box; step size eta = 2 eps per example;
- step: z = P(x_k + eta * s(grad)), s = sign (L-inf) or grad / ||grad||_2 (L2); then
  x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})) with momentum a = 0.75 (1 at k = 0);
- checkpoints: the first after max(int(0.22 N), 1) iterations, then windows shrinking by
  max(int(0.03 N), 1) down to max(int(0.06 N), 1) (the p_j schedule); at a checkpoint an
  example's step size halves, and it restarts from its best point (and that point's gradient),
  if the loss rose in at most rho (0.75) of the window's steps (condition 1) or the step size
  was not halved at the previous checkpoint and the best loss has not improved since (condition 2);
- losses: cross-entropy, DLR, and the targeted DLR of APGD-T (functions below);
- restarts and targets run only on the examples not yet fooled; APGD-T's targets are, per
  example, the classes with the 2nd, 3rd, ... (n_target_classes + 1)-th largest logit at x
  (AutoAttack standard: 9 targets for 10 classes, 100 iterations and 1 restart each).
Differences from the reference: the first window's "rose" test compares its first step with
the loss at the starting point (the reference compares with an unset entry, 0); with
eot_iter > 1 the loss, like the gradient, is averaged over the EOT draws (the reference keeps
the last draw's); n_target_classes above K - 1 is capped (the reference only warns).

Compilation: one restart (or one target) is one call of a module-level tf.function, traced once
per model_fn, loss, norm and input shape (the batch axis relaxes after a second size): a
tf.while_loop over iterations on the whole batch. Inside a caller's tf.function the same graph
is inlined. The model runs on float32 inputs and its logits are cast to float32.
Randomness is stateless, keyed on `seed`, the target and the restart: same seed, same inputs,
same x_adv.
"""

import numpy as np
import tensorflow as tf

from attacks import _checks
from attacks.fgm import predicted_labels
from attacks.projection import non_batch_axes, project
from attacks.schedules import checkpoint_schedule  # noqa: F401 - also this module's name for it

LOSSES = ("ce", "dlr", "dlr-targeted")
_TINY = 1e-12  # the reference's floor in normalisations and in the DLR denominator


def dlr_loss(labels, logits):
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), per example, to be maximised:
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), z_pi sorted decreasingly.
    Invariant to shifting and rescaling the logits; needs >= 3 classes."""
    logits = tf.cast(logits, tf.float32)
    top = tf.math.top_k(logits, k=3).values
    is_label = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    label_logit = tf.reduce_max(tf.where(is_label, logits, logits.dtype.min), axis=-1)
    best_other = tf.reduce_max(tf.where(is_label, logits.dtype.min, logits), axis=-1)
    return -(label_logit - best_other) / (top[:, 0] - top[:, 2] + _TINY)


def targeted_dlr_loss(labels, targets, logits):
    """Targeted DLR (Croce & Hein 2020, eq. 7), per example, to be maximised:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12); needs >= 4 classes."""
    logits = tf.cast(logits, tf.float32)
    top = tf.math.top_k(logits, k=4).values
    label_logit = tf.gather(logits, labels, batch_dims=1)
    target_logit = tf.gather(logits, targets, batch_dims=1)
    return -(label_logit - target_logit) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def _per_example(values, x):
    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))


def _normalize(v, norm):
    axes = non_batch_axes(v)
    if norm == np.inf:
        scale = tf.reduce_max(tf.abs(v), axis=axes, keepdims=True)
    else:
        scale = tf.sqrt(tf.reduce_sum(tf.square(v), axis=axes, keepdims=True))
    return v / (scale + _TINY)


def _apgd_run(model_fn, x, y, targets, eps, norm, loss, is_checkpoint, window, eot_iter, rho,
              clip_min, clip_max, key):
    """One APGD run from a random start on the whole batch x (float32).
    Returns (fooled [B] bool, x_fooled: the last misclassified iterate, else x)."""
    n_iter = tf.shape(is_checkpoint)[0]

    def one_draw(x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = tf.cast(model_fn(x_adv), tf.float32)
            if loss == "ce":
                values = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            elif loss == "dlr":
                values = dlr_loss(y, logits)
            else:
                values = targeted_dlr_loss(y, targets, logits)
            # Summed over the batch: each example's loss depends on its own input only.
            total = tf.reduce_sum(values)
        return values, tape.gradient(total, x_adv), logits

    def loss_and_gradient(x_adv):
        values, grad, logits = one_draw(x_adv)
        if eot_iter > 1:  # a Python int: one model call in the graph unless EOT is asked for
            def body(j, x_in, loss_sum, grad_sum, _):
                values, grad, logits = one_draw(x_in)
                return j + 1, x_in, loss_sum + values, grad_sum + grad, logits

            _, _, values, grad, logits = tf.while_loop(
                lambda j, *_: j < eot_iter, body, (tf.constant(1), x_adv, values, grad, logits))
            values, grad = values / float(eot_iter), grad / float(eot_iter)
        misclassified = tf.not_equal(tf.argmax(logits, axis=-1, output_type=y.dtype), y)
        return values, grad, misclassified

    if norm == np.inf:
        t = tf.random.stateless_uniform(tf.shape(x), key, -1.0, 1.0)
    else:
        t = tf.random.stateless_normal(tf.shape(x), key)
    x_adv = project(x + eps * _normalize(t, norm), x, norm, eps, clip_min, clip_max)
    loss_now, grad, fooled = loss_and_gradient(x_adv)
    x_fooled = tf.where(_per_example(fooled, x), x_adv, x)
    step = tf.fill(tf.shape(loss_now), 2.0 * eps)  # the reference's initial step 2 eps
    state = dict(i=tf.constant(0), x_adv=x_adv, x_old=x_adv, grad=grad, loss_prev=loss_now,
                 x_best=x_adv, grad_best=grad, loss_best=loss_now, fooled=fooled, x_fooled=x_fooled,
                 step=step, rises=tf.zeros_like(loss_now), halved_last=tf.ones_like(fooled),
                 loss_best_last=loss_now)

    def body(s):
        a = tf.where(s["i"] > 0, 0.75, 1.0)
        direction = tf.sign(s["grad"]) if norm == np.inf else _normalize(s["grad"], 2)
        z = project(s["x_adv"] + _per_example(s["step"], x) * direction, x, norm, eps, clip_min, clip_max)
        momentum = s["x_adv"] - s["x_old"]
        x_new = project(s["x_adv"] + a * (z - s["x_adv"]) + (1.0 - a) * momentum, x, norm, eps,
                        clip_min, clip_max)
        loss_new, grad_new, misclassified = loss_and_gradient(x_new)
        fooled = s["fooled"] | misclassified
        x_fooled = tf.where(_per_example(misclassified, x), x_new, s["x_fooled"])
        better = loss_new > s["loss_best"]
        x_best = tf.where(_per_example(better, x), x_new, s["x_best"])
        grad_best = tf.where(_per_example(better, x), grad_new, s["grad_best"])
        loss_best = tf.where(better, loss_new, s["loss_best"])
        rises = s["rises"] + tf.cast(loss_new > s["loss_prev"], tf.float32)

        check = tf.gather(is_checkpoint, s["i"])
        k = tf.cast(tf.gather(window, s["i"]), tf.float32)
        oscillating = rises <= k * rho  # condition 1: too few of the window's steps raised the loss
        stalled = ~s["halved_last"] & (s["loss_best_last"] >= loss_best)  # condition 2
        halve = check & (oscillating | stalled)
        back = _per_example(halve, x)
        return dict(
            i=s["i"] + 1, x_adv=tf.where(back, x_best, x_new), x_old=s["x_adv"],
            grad=tf.where(back, grad_best, grad_new), loss_prev=loss_new, x_best=x_best,
            grad_best=grad_best, loss_best=loss_best, fooled=fooled, x_fooled=x_fooled,
            step=tf.where(halve, s["step"] / 2.0, s["step"]),
            rises=tf.where(check, tf.zeros_like(rises), rises),
            halved_last=tf.where(check, halve, s["halved_last"]),
            loss_best_last=tf.where(check, loss_best, s["loss_best_last"]))

    out = tf.while_loop(lambda s: s["i"] < n_iter, lambda s: [body(s)], [state])[0]
    return out["fooled"], out["x_fooled"]


_apgd_compiled = tf.function(_apgd_run, reduce_retracing=True)


def _validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter, rho, seed):
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
    x = tf.convert_to_tensor(x)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(f"x must be a batch with a known rank >= 2, got shape {x.shape}.")
    x32 = tf.cast(x, tf.float32)
    labels = predicted_labels(model_fn, x32) if y is None else tf.convert_to_tensor(y)
    if labels.shape.rank == 2:
        labels = tf.argmax(labels, axis=-1)
    if labels.shape.rank != 1:
        raise ValueError(f"y must be integer labels [B] or one-hot [B, K], got shape {labels.shape}.")
    if x.shape[0] is not None and labels.shape[0] is not None and x.shape[0] != labels.shape[0]:
        raise ValueError(f"x and y hold {x.shape[0]} and {labels.shape[0]} examples.")
    return x, x32, tf.cast(labels, tf.int64)


def _attack(model_fn, x, x32, y, target_ranks, eps, norm, loss, n_iter, n_restarts, eot_iter, rho,
            clip_min, clip_max, seed):
    """Runs restarts (and targets) on the examples not yet fooled; returns x_adv in x's dtype."""
    classes = int(tf.cast(model_fn(x32[:1]), tf.float32).shape[-1])
    if loss == "dlr" and classes < 3:
        raise ValueError(f"the DLR loss needs >= 3 classes, the model has {classes}.")
    if loss == "dlr-targeted" and classes < 4:
        raise ValueError(f"the targeted DLR loss needs >= 4 classes, the model has {classes}.")
    is_checkpoint, window = (tf.constant(v) for v in checkpoint_schedule(int(n_iter)))
    hyper = dict(eps=_checks.to_float32(eps), norm=norm, loss=loss,
                 is_checkpoint=is_checkpoint, window=window, eot_iter=int(eot_iter),
                 rho=_checks.to_float32(rho), clip_min=_checks.to_float32(clip_min),
                 clip_max=_checks.to_float32(clip_max))
    run = _apgd_run if tf.inside_function() else _apgd_compiled
    logits = tf.cast(model_fn(x32), tf.float32)
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    correct = tf.equal(tf.argmax(logits, axis=-1), y)  # misclassified examples are not attacked
    found = tf.zeros_like(correct)
    x_adv = x32
    for rank in target_ranks:
        for restart in range(int(n_restarts)):
            active = correct & ~found
            if tf.executing_eagerly() and not bool(tf.reduce_any(active)):
                break
            idx = tf.where(active)
            targets = tf.gather_nd(ranked[:, rank], idx) if rank else tf.gather_nd(y, idx)
            key = tf.random.experimental.stateless_fold_in(
                tf.constant([int(seed), 0], tf.int64), 1000 * (rank or 0) + restart)
            fooled, x_fooled = run(model_fn, tf.gather_nd(x32, idx), tf.gather_nd(y, idx),
                                   tf.cast(targets, tf.int64), key=key, **hyper)
            rows = tf.boolean_mask(idx, fooled)
            x_adv = tf.tensor_scatter_nd_update(x_adv, rows, tf.boolean_mask(x_fooled, fooled))
            found = tf.tensor_scatter_nd_update(found, rows, tf.ones(tf.shape(rows)[:1], tf.bool))
    # Fooled examples get their float32 iterate, the others x itself (bit for bit).
    return tf.stop_gradient(tf.where(_per_example(found, x32), tf.cast(x_adv, x.dtype), x))


def apgd(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, loss="ce", n_iter=100,
         n_restarts=1, eot_iter=1, rho=0.75, seed=0):
    """APGD-CE (loss="ce") or APGD-DLR (loss="dlr"), untargeted; see the module docstring.

    model_fn: x -> logits. x: a batch in [clip_min, clip_max]. eps: radius (>= 0). norm: 2 or
    np.inf. y: integer labels (one-hot accepted); None uses the model's predictions.
    n_iter (>= 1) iterations per restart, n_restarts (>= 1) random restarts on the examples still
    classified correctly, eot_iter (>= 1) gradients averaged per step (Expectation over
    Transformation, for randomised models), rho: the checkpoint threshold, seed: an int >= 0.
    Returns x_adv (x's shape and dtype): the misclassified point found, else x.
    """
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}.")
    x, x32, y = _validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter,
                          rho, seed)
    return _attack(model_fn, x, x32, y, [None], eps, norm, loss, n_iter, n_restarts, eot_iter, rho,
                   clip_min, clip_max, seed)


def apgd_targeted(model_fn, x, *, eps, norm=2, clip_min=0.0, clip_max=1.0, y=None, n_target_classes=9,
                  n_iter=100, n_restarts=1, eot_iter=1, rho=0.75, seed=0):
    """APGD-T: APGD on the targeted DLR loss, once per target class (see the module docstring).

    n_target_classes (>= 1, capped at K - 1): the targets are the classes ranked 2nd, 3rd, ... by
    the logits at x; each gets n_restarts runs of n_iter iterations on the examples not yet
    fooled. Other arguments as apgd. Needs >= 4 classes. Returns x_adv as apgd.
    """
    _checks.check_integer("n_target_classes", n_target_classes, 1)
    x, x32, y = _validate(model_fn, x, eps, norm, clip_min, clip_max, y, n_iter, n_restarts, eot_iter,
                          rho, seed)
    classes = int(tf.cast(model_fn(x32[:1]), tf.float32).shape[-1])
    ranks = list(range(1, min(int(n_target_classes), classes - 1) + 1))
    return _attack(model_fn, x, x32, y, ranks, eps, norm, "dlr-targeted", n_iter, n_restarts, eot_iter,
                   rho, clip_min, clip_max, seed)
