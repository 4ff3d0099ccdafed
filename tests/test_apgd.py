"""Properties of attacks/apgd.py (APGD-CE, APGD-DLR, APGD-T): the affine closed form, the ball
and the box, the published checkpoint schedule, the DLR losses, seeds, dtypes, compilation."""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
from tests.autoattack_models import affine_model, constant_model, distances, middle_of_box, minimal_distance

# The package exports the function apgd under the module's name; the module itself:
apgd_module = importlib.import_module("attacks.apgd")
FAST = dict(n_iter=20)


def _run(targeted, model, x, **kwargs):
    if targeted:
        return attacks.apgd_targeted(model, x, **{**FAST, **kwargs}).numpy()
    return attacks.apgd(model, x, **{**FAST, **kwargs}).numpy()


@pytest.mark.parametrize("norm", [2, np.inf], ids=["l2", "linf"])
@pytest.mark.parametrize("loss, targeted", [("ce", False), ("dlr", False), (None, True)],
                         ids=["ce", "dlr", "targeted"])
def test_affine_fools_every_example_within_reach(norm, loss, targeted):
    """On an affine model, every example whose exact minimal distance is below eps (less 2%) is
    fooled in 20 iterations, and no output leaves the ball (float32 rounding aside) or the box.
    eps is the median minimal distance, so about half the examples are out of reach."""
    model, weights, bias = affine_model(5)
    x = middle_of_box(24)
    optimum, y = minimal_distance(x, weights, bias, norm)
    eps = float(np.median(optimum))
    kwargs = dict(eps=eps, norm=norm, y=y) if targeted else dict(eps=eps, norm=norm, y=y, loss=loss)
    x_adv = _run(targeted, model, x, **kwargs)
    fooled = model(x_adv).numpy().argmax(1) != y
    assert np.all(fooled[optimum < 0.98 * eps])
    assert not np.any(fooled[optimum > eps * (1 + 1e-4)])  # nothing beyond the exact optimum
    assert distances(x_adv, x, norm).max() <= eps * (1 + 1e-5)
    assert x_adv.dtype == np.float32 and np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_failures_and_misclassified_examples_return_x_exactly():
    """Unfooled examples come back as x bit for bit (float64 in, float64 out); so do examples the
    model already gets wrong (they are not attacked)."""
    x = middle_of_box(4).astype(np.float64) + 1e-9
    out = attacks.apgd(constant_model(), x, eps=0.5, y=np.zeros(4, np.int64), **FAST)
    assert out.dtype == tf.float64
    np.testing.assert_array_equal(out.numpy(), x)
    model, _, _ = affine_model(4)
    wrong = (model(x).numpy().argmax(1) + 1) % 4
    np.testing.assert_array_equal(attacks.apgd(model, x, eps=0.5, y=wrong, **FAST).numpy(), x)


def test_eps_zero_returns_x():
    model, _, _ = affine_model(4)
    x = middle_of_box(4)
    np.testing.assert_array_equal(attacks.apgd(model, x, eps=0.0, **FAST).numpy(), x)


def test_checkpoints_are_the_published_schedule():
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): for 100 iterations
    the step-size test runs after iterations 22, 41, 57, 70, 80, 87, 93, 99."""
    is_checkpoint, window = apgd_module.checkpoint_schedule(100)
    np.testing.assert_array_equal(np.flatnonzero(is_checkpoint) + 1, [22, 41, 57, 70, 80, 87, 93, 99])
    np.testing.assert_array_equal(window[is_checkpoint], [22, 19, 16, 13, 10, 7, 6, 6])


def test_dlr_losses():
    logits = tf.constant([[4.0, 1.0, 0.0, -1.0], [0.0, 3.0, 2.0, 1.0]])
    labels = tf.constant([0, 0])
    # -(z_y - max_other) / (z1 - z3): example 0: -(4 - 1) / (4 - 0); example 1: -(0 - 3) / (3 - 1).
    np.testing.assert_allclose(attacks.dlr_loss(labels, logits), [-0.75, 1.5], rtol=1e-6)
    np.testing.assert_allclose(attacks.dlr_loss(labels, 3.0 * logits + 7.0), [-0.75, 1.5], rtol=1e-6)
    # targeted, target 2: -(z_y - z_t) / (z1 - (z3 + z4) / 2).
    targets = tf.constant([2, 2])
    np.testing.assert_allclose(attacks.targeted_dlr_loss(labels, targets, logits),
                               [-4.0 / 4.5, 2.0 / 2.5], rtol=1e-6)


def test_deterministic_under_a_seed_and_inlines():
    model, _, _ = affine_model(5, seed=2)
    x = middle_of_box(8)
    first = attacks.apgd(model, x, eps=0.2, seed=3, n_restarts=2, **FAST).numpy()
    np.testing.assert_array_equal(attacks.apgd(model, x, eps=0.2, seed=3, n_restarts=2, **FAST).numpy(), first)
    inlined = tf.function(lambda t: attacks.apgd(model, t, eps=0.2, seed=3, n_restarts=2, **FAST))(tf.constant(x))
    np.testing.assert_allclose(inlined.numpy(), first, atol=1e-6)


def test_a_new_eps_does_not_retrace():
    model, _, _ = affine_model(4, seed=7)  # a fresh model_fn
    x = middle_of_box(6)
    y = np.zeros(6, np.int64)  # some are misclassified: the attacked subset is fixed by y
    attacks.apgd(model, x, eps=0.3, y=y, **FAST)
    before = apgd_module._apgd_compiled.experimental_get_tracing_count()
    attacks.apgd(model, x, eps=0.1, y=y, **FAST)
    assert apgd_module._apgd_compiled.experimental_get_tracing_count() == before


def test_bfloat16_model_gives_float32_result():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, weights, bias = affine_model(4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = middle_of_box(6)
    x_adv = attacks.apgd(model, x, eps=1.0, **FAST)
    assert x_adv.dtype == tf.float32 and np.all(np.isfinite(x_adv))
    assert distances(x_adv, x, 2).max() <= 1.0 + 1e-5


def test_eot_averages_over_draws():
    """eot_iter > 1 runs the inner loop; on a deterministic model the result is still a valid
    attack (every reachable example fooled, inside the ball)."""
    model, weights, bias = affine_model(5)
    x = middle_of_box(8)
    optimum, y = minimal_distance(x, weights, bias, 2)
    x_adv = attacks.apgd(model, x, eps=float(optimum.max()) * 1.05, y=y, eot_iter=2, n_iter=10).numpy()
    assert np.all(model(x_adv).numpy().argmax(1) != y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm=1), "norm"),
    (dict(eps=-1.0), "eps"),
    (dict(n_iter=0), "n_iter"),
    (dict(n_restarts=0), "n_restarts"),
    (dict(eot_iter=0), "eot_iter"),
    (dict(rho=1.5), "rho"),
    (dict(loss="hinge"), "loss"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
    (dict(y=np.zeros(3, np.int64)), "examples"),
])
def test_bad_arguments_raise(kwargs, match):
    model, _, _ = affine_model(4)
    with pytest.raises(ValueError, match=match):
        attacks.apgd(model, middle_of_box(2), **{"eps": 0.1, **kwargs})


def test_dlr_needs_enough_classes():
    model, _, _ = affine_model(3)
    with pytest.raises(ValueError, match="targeted DLR loss needs >= 4 classes"):
        attacks.apgd_targeted(model, middle_of_box(2), eps=0.1)
    with pytest.raises(ValueError, match="DLR loss needs >= 3 classes"):
        attacks.apgd(affine_model(2)[0], middle_of_box(2), eps=0.1, loss="dlr")
