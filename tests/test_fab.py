"""Properties of attacks/fab.py (FAB-T): the exact hyperplane-and-box projection, the affine closed
form (FAB's linearisation is exact there), the ball and the box, restarts, seeds, arguments."""

import numpy as np
import pytest
import tensorflow as tf

import attacks
from attacks.fab import project_onto_hyperplane_box
from tests.autoattack_models import affine_model, constant_model, distances, middle_of_box, minimal_distance


def _bisection_reference(w, c, lower, upper, norm):
    """The same problem solved by bisection on the multiplier, in float64."""
    sign = np.where(c < 0, -1.0, 1.0)[:, None]
    w, c = w * sign, np.abs(c)

    def step(lam):
        if norm == np.inf:
            return np.clip(-np.sign(w) * lam[:, None], lower, upper)
        return np.clip(-lam[:, None] * w, lower, upper)

    low, high = np.zeros(len(w)), np.full(len(w), 1e6)
    for _ in range(200):
        mid = (low + high) / 2
        reached = -(w * step(mid)).sum(1) >= c
        high, low = np.where(reached, mid, high), np.where(reached, low, mid)
    return step(high)


@pytest.mark.parametrize("norm", [2, np.inf], ids=["l2", "linf"])
def test_projection_matches_bisection_with_the_box_binding(norm):
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, (8, 40))
    w = rng.normal(size=(8, 40))
    c = 2.0 * rng.normal(size=8)  # large enough that the box binds on many coordinates
    d = project_onto_hyperplane_box(tf.constant(t, tf.float32), tf.constant(w, tf.float32),
                                    tf.constant(c, tf.float32), tf.constant(-t, tf.float32),
                                    tf.constant(1 - t, tf.float32), norm).numpy()
    expected = _bisection_reference(w, c, -t, 1 - t, norm)
    feasible = -(np.abs(w) * np.where(w * np.sign(c)[:, None] > 0, t, 1 - t)).sum(1) <= -np.abs(c)
    assert feasible.sum() >= 4
    np.testing.assert_allclose(d[feasible], expected[feasible], atol=1e-4)
    np.testing.assert_allclose((w * d).sum(1)[feasible], -c[feasible], atol=1e-4)
    assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)


def test_projection_without_the_box_is_the_textbook_one():
    rng = np.random.default_rng(1)
    w, c = rng.normal(size=(4, 30)), 0.01 * rng.normal(size=4)
    wide = np.full_like(w, 100.0)
    d2 = project_onto_hyperplane_box(None, tf.constant(w, tf.float32), tf.constant(c, tf.float32),
                                     tf.constant(-wide, tf.float32), tf.constant(wide, tf.float32), 2).numpy()
    np.testing.assert_allclose(d2, -c[:, None] * w / (w ** 2).sum(1, keepdims=True), rtol=1e-4, atol=1e-8)
    dinf = project_onto_hyperplane_box(None, tf.constant(w, tf.float32), tf.constant(c, tf.float32),
                                       tf.constant(-wide, tf.float32), tf.constant(wide, tf.float32), np.inf).numpy()
    np.testing.assert_allclose(dinf, -(c / np.abs(w).sum(1))[:, None] * np.sign(w), rtol=1e-4, atol=1e-8)


def test_unreachable_hyperplane_gives_the_saturated_step():
    t = np.full((1, 3), 0.5, np.float32)
    w = np.array([[1.0, -2.0, 0.0]], np.float32)
    d = project_onto_hyperplane_box(t, w, tf.constant([10.0]), -t, 1 - t, 2).numpy()
    np.testing.assert_allclose(d, [[-0.5, 0.5, 0.0]])


@pytest.mark.parametrize("norm", [2, np.inf], ids=["l2", "linf"])
def test_affine_minimal_distance_and_eps(norm):
    """On an affine model the linearisation is exact: with a large eps FAB-T's distances are within
    5.5% of the exact minimum (eta 1.05 overshoots, the backward steps bring it back); with eps the
    median minimum, every example within eps / 1.06 is fooled and nothing leaves the ball or box."""
    model, weights, bias = affine_model(5)
    x = middle_of_box(16)
    optimum, y = minimal_distance(x, weights, bias, norm)
    x_adv = attacks.fab_targeted(model, x, eps=10.0, norm=norm, y=y, n_iter=20).numpy()
    assert np.all(model(x_adv).numpy().argmax(1) != y)
    ratio = distances(x_adv, x, norm) / optimum
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.055, ratio
    eps = float(np.median(optimum))
    x_adv = attacks.fab_targeted(model, x, eps=eps, norm=norm, y=y, n_iter=20).numpy()
    fooled = model(x_adv).numpy().argmax(1) != y
    assert np.all(fooled[optimum < eps / 1.06])
    assert distances(x_adv, x, norm).max() <= eps * (1 + 1e-5)
    assert x_adv.dtype == np.float32 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_restarts_are_random_and_seeded():
    model, weights, bias = affine_model(5, seed=4)
    x = middle_of_box(8)
    optimum, y = minimal_distance(x, weights, bias, 2)
    kwargs = dict(eps=float(np.median(optimum)), y=y, n_iter=5, n_restarts=3, n_target_classes=1)
    first = attacks.fab_targeted(model, x, seed=0, **kwargs).numpy()
    np.testing.assert_array_equal(attacks.fab_targeted(model, x, seed=0, **kwargs).numpy(), first)
    assert np.all(np.isfinite(first)) and distances(first, x, 2).max() <= kwargs["eps"] * (1 + 1e-5)


def test_failures_return_x_exactly():
    x = middle_of_box(3).astype(np.float64)
    out = attacks.fab_targeted(constant_model(), x, eps=0.5, y=np.zeros(3, np.int64), n_iter=5)
    assert out.dtype == tf.float64
    np.testing.assert_array_equal(out.numpy(), x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm=1), "norm"),
    (dict(n_iter=0), "n_iter"),
    (dict(alpha_max=2.0), "alpha_max"),
    (dict(eta=0.5), "eta"),
    (dict(beta=-0.1), "beta"),
    (dict(n_target_classes=0), "n_target_classes"),
    (dict(clip_min=None), "clip_min and clip_max"),
])
def test_bad_arguments_raise(kwargs, match):
    model, _, _ = affine_model(4)
    with pytest.raises(ValueError, match=match):
        attacks.fab_targeted(model, middle_of_box(2), **{"eps": 0.1, **kwargs})
