"""Properties of attacks/square.py (Square Attack): ball and box, the published p schedule, the L2
pattern, seeds, output-only queries, dtypes and arguments."""

import numpy as np
import pytest
import tensorflow as tf

import attacks
from attacks import square as square_module
from tests.autoattack_models import (IMAGE_SHAPE, affine_model, distances, middle_of_box, minimal_distance,
                                     small_cnn, synthetic_images)


@pytest.mark.parametrize("norm, eps", [(2, 0.5), (np.inf, 8 / 255)], ids=["l2", "linf"])
def test_stays_in_ball_and_box_and_fools_some(norm, eps):
    model = small_cnn()
    x, y = synthetic_images(16, seed=5)
    x[:4] = np.clip(x[:4] * 3 - 1, 0, 1)  # pixels on the box's faces
    x_adv = attacks.square_attack(model, x, eps=eps, norm=norm, y=y, n_queries=100).numpy()
    assert x_adv.dtype == np.float32 and np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert distances(x_adv, x, norm).max() <= eps * (1 + 1e-5)
    correct = model(x).numpy().argmax(1) == y
    fooled = model(x_adv).numpy().argmax(1) != y
    assert fooled[correct].sum() >= 1


def test_linf_affine_fools_the_easy_examples():
    """An affine model is fooled at the vertex eps * sign(w_j - w_y): with eps twice the exact
    L-inf minimum, random squares of +-eps find most such examples in 200 queries."""
    model, weights, bias = affine_model(4, shape=IMAGE_SHAPE)
    x = middle_of_box(16, IMAGE_SHAPE)
    optimum, y = minimal_distance(x, weights, bias, np.inf)
    eps = float(np.quantile(optimum, 0.5))
    x_adv = attacks.square_attack(model, x, eps=2 * eps, norm=np.inf, y=y, n_queries=200).numpy()
    fooled = model(x_adv).numpy().argmax(1) != y
    assert fooled[optimum <= eps].mean() >= 0.75


def test_deterministic_under_a_seed():
    model = small_cnn()
    x, y = synthetic_images(8, seed=6)
    runs = [attacks.square_attack(model, x, eps=0.5, y=y, n_queries=30, seed=s).numpy() for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2]) or np.array_equal(runs[0], x)


def test_queries_outputs_only():
    """The model's gradient is never asked for: a model whose gradient raises still works."""
    _, weights, bias = affine_model(4, shape=IMAGE_SHAPE)

    @tf.autograph.experimental.do_not_convert
    @tf.custom_gradient
    def no_gradient(x):
        def grad(_):
            raise AssertionError("Square Attack took a gradient")
        return tf.reshape(x, [tf.shape(x)[0], -1]) @ weights + bias, grad

    x = middle_of_box(4, IMAGE_SHAPE)
    for norm in (2, np.inf):
        out = attacks.square_attack(no_gradient, x, eps=0.3, norm=norm, n_queries=10)
        assert out.shape == x.shape


def test_p_schedule():
    """p_init 0.8 halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000;
    rescaled to 5000 queries those become 5, 25, 100, ..."""
    def p(i, n, rescale=True):
        return float(square_module.square_p_schedule(i, n, 0.8, rescale))

    assert [p(i, 10000) for i in (0, 10, 11, 50, 51, 8000, 8001)] == pytest.approx(
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512])
    assert [p(i, 5000) for i in (5, 6, 25, 26)] == pytest.approx([0.8, 0.4, 0.4, 0.2])
    assert [p(i, 5000, rescale=False) for i in (10, 11)] == pytest.approx([0.8, 0.4])


def test_l2_pattern_has_unit_norm_and_two_signed_halves():
    ones = tf.constant([0, 2])
    pattern = square_module._eta(ones, ones, tf.constant(5), tf.constant([False, True]), 8, 8).numpy()[..., 0]
    np.testing.assert_allclose((pattern ** 2).sum((1, 2)), 1.0, rtol=1e-5)
    window = pattern[0, :5, :5]
    assert np.all(window[:2] > 0) and np.all(window[2:] < 0) and np.all(pattern[0, 5:] == 0)
    np.testing.assert_allclose(pattern[1, 2:7, 2:7], window.T, rtol=1e-6)  # transposed copy


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm=1), "norm"),
    (dict(n_queries=0), "n_queries"),
    (dict(p_init=0.0), "p_init"),
    (dict(n_restarts=0), "n_restarts"),
    (dict(clip_max=None), "clip_min and clip_max"),
])
def test_bad_arguments_raise(kwargs, match):
    model, _, _ = affine_model(4, shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match=match):
        attacks.square_attack(model, middle_of_box(2, IMAGE_SHAPE), **{"eps": 0.1, **kwargs})


def test_needs_images():
    model, _, _ = affine_model(4)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        attacks.square_attack(model, np.zeros((2, 48), np.float32), eps=0.1, y=np.zeros(2, np.int64))
