"""RvS (docs/methods.md section 4): the entropic OT distance, the noise generator and the two-player step."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from models import build_classifier
from models.noise_generator import build_noise_generator
from training.config import DefenseConfig, TrainConfig
from training.defenses.rvs import RvSTraining, smoothed_labels, synthesize
from training.ema import WeightEMA
from training.loop import compiled_train_step
from training.optimal_transport import sinkhorn_cost, sinkhorn_plan, squared_euclidean_cost
from tests.helpers import changed as _changed, color_data, weights as _weights


def _color_data(n=16, **kwargs):
    return color_data(n, **kwargs)


def _exact_ot(cost):
    """Uniform marginals on n points each: exact OT is an assignment, of cost sum / n."""
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols].sum() / len(cost), rows, cols


@pytest.mark.parametrize("seed", range(4))
def test_sinkhorn_agrees_with_the_exact_assignment(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(size=(8, 3)), rng.uniform(size=(8, 3))
    cost = squared_euclidean_cost(a, b).numpy()
    plan = sinkhorn_plan(cost).numpy()
    exact, _, _ = _exact_ot(cost)
    # Measured: within 0.7% of the exact cost, rows within 2% of 1/n (columns come last: exact).
    assert float(sinkhorn_cost(a, b)) == pytest.approx(exact, rel=0.02)
    np.testing.assert_allclose(plan.sum(axis=0), 1 / 8, rtol=1e-4)
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 8, rtol=0.05)


def test_sinkhorn_of_a_cloud_to_itself_is_near_zero_and_to_a_shift_approaches_the_squared_shift():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(12, 4)).astype(np.float32)
    assert float(sinkhorn_cost(a, a)) < 1e-3
    shift = np.array([0.3, -0.2, 0.1, 0.0], np.float32)  # exact OT to a + shift: ||shift||^2
    exact = float(np.sum(shift ** 2))
    errors = [abs(float(sinkhorn_cost(a, a + shift, epsilon=e, iterations=300)) - exact)
              for e in (0.1, 0.03, 0.01)]
    assert errors[0] > errors[-1] and errors[-1] < 0.05 * exact


def test_sinkhorn_on_features_of_scale_100_is_finite_and_differentiable():
    rng = np.random.default_rng(6)
    a = tf.Variable(100 * rng.normal(size=(16, 8)).astype(np.float32))
    b = tf.constant(100 * rng.normal(size=(16, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = sinkhorn_cost(a, b)
    grad = tape.gradient(value, a)
    assert np.isfinite(float(value)) and grad is not None and np.all(np.isfinite(grad.numpy()))


def test_sinkhorn_on_large_costs_stays_finite_and_normalising_restores_convergence():
    rng = np.random.default_rng(0)
    a, b = 10 * rng.uniform(size=(8, 5)), 10 * rng.uniform(size=(8, 5))  # costs ~ 100: exp(-C/0.01) = 0
    cost = squared_euclidean_cost(a, b).numpy()
    exact, _, _ = _exact_ot(cost)
    assert np.isfinite(float(sinkhorn_cost(a, b)))
    assert float(sinkhorn_cost(a, b, cost_normalization="max")) == pytest.approx(exact, rel=0.03)


def test_sinkhorn_gradient_is_finite_and_matches_the_assignment_gradient():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(8, 4)).astype(np.float32)
    perm = rng.permutation(8)
    b = tf.Variable(a[perm] + 0.02 * rng.normal(size=(8, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = sinkhorn_cost(a, b)
    grad = tape.gradient(value, b).numpy()
    _, rows, cols = _exact_ot(squared_euclidean_cost(a, b).numpy())
    expected = np.zeros_like(grad)
    expected[cols] = 2 * (b.numpy()[cols] - a[rows]) / 8  # d/db_j of sum_j ||b_j - a_sigma(j)||^2 / n
    np.testing.assert_allclose(grad, expected, atol=0.1 * np.abs(expected).max())
    same = tf.Variable(a)  # zero cost on the diagonal
    with tf.GradientTape() as tape:
        value = sinkhorn_cost(a, same)
    assert float(value) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(tape.gradient(value, same).numpy()))


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_noise_generator_output_matches_the_image(shape):
    generator = build_noise_generator(640, shape)
    assert generator(tf.zeros((2, 640))).shape == (2,) + shape
    assert generator.output.dtype == "float32"
    assert generator.get_layer("fc").units == (shape[0] // 4) * (shape[1] // 4) * 64
    assert [generator.get_layer(n).filters for n in ("up1", "up2", "delta")] == [32, 16, shape[2]]


def test_smoothed_labels_put_one_minus_s_on_the_true_class():
    targets = smoothed_labels(tf.constant([0, 2]), 5, 0.5).numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[1], [0.125, 0.125, 0.5, 0.125, 0.125])


def _defense(norm="inf", eps=8 / 255, gen_lr=0.01, precision="float32", seed=0):
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    cfg = DefenseConfig(defense="rvs", eps=eps, rvs_norm=norm, rvs_z_dim=32, rvs_gen_lr=gen_lr, gen_width=0.5)
    defense = RvSTraining(classifier, cfg, TrainConfig(precision=precision),
                          tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


@pytest.mark.parametrize("norm, eps", [("inf", 8 / 255), ("2", 0.5)])
def test_x_adv_stays_in_the_ball_and_the_box_at_the_extremes(norm, eps):
    defense = _defense(norm, eps)
    x = tf.constant(np.stack([np.zeros((16, 16, 3)), np.ones((16, 16, 3)), np.full((16, 16, 3), 0.5)]),
                    tf.float32)
    huge = lambda z, training: 100.0 * tf.sign(tf.random.normal((3, 16, 16, 3)))  # noqa: E731
    candidates = [defense.perturb(defense.networks, x, None),
                  synthesize(huge, x, None, defense._noise(x)[1], defense.norm, eps, training=False)]
    for x_adv in candidates:
        x_adv = x_adv.numpy()
        delta = (x_adv - x.numpy()).reshape(3, -1)
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        if norm == "inf":
            assert np.abs(delta).max() <= eps + 1e-6
        else:
            assert np.linalg.norm(delta, axis=1).max() <= eps * (1 + 1e-5)
    assert np.abs(candidates[1].numpy()[2] - 0.5).max() > 0  # the mid-grey image is perturbed


def test_each_step_touches_only_its_own_weights():
    defense = _defense()
    x, y = _color_data()
    classifier_before, generator_before = _weights(defense.classifier), _weights(defense.generator)
    defense.generator_step(x)
    assert _changed(generator_before, defense.generator)
    assert not _changed(classifier_before, defense.classifier)
    generator_before = _weights(defense.generator)
    defense.classifier_step(x, y)
    assert _changed(classifier_before, defense.classifier)
    assert not _changed(generator_before, defense.generator)


@pytest.mark.slow
def test_generator_steps_raise_the_ot_distance_on_a_frozen_classifier():
    # lr 0.05, not the paper's 0.01: on this tiny classifier OT starts near 0.005, and 40 steps at
    # 0.01 raised it 1.3x-2.8x over seeds 0-3, at 0.05 4.3x-9.7x.
    defense = _defense(eps=0.1, gen_lr=0.05)
    x, _ = _color_data()
    natural, _ = defense.features(x)

    @tf.function
    def mean_ot(draws=8):
        total = 0.0
        for _ in range(draws):
            adversarial, _ = defense.features(defense._synthesize(defense.generator, x, training=True))
            total += sinkhorn_cost(natural, adversarial)
        return total / draws

    before = float(mean_ot())
    step = tf.function(defense.generator_step)
    for _ in range(40):
        step(x)
    after = float(mean_ot())
    assert after > 2.0 * before, (before, after)


def test_a_compiled_step_traces_once_and_trains_both_networks():
    defense = _defense(norm="2", eps=0.5)
    ema = WeightEMA(defense.networks, 0.99)
    train_step = compiled_train_step(defense, ema, tf.Variable(0, dtype=tf.int64))
    x, y = _color_data()
    before = {name: _weights(net) for name, net in defense.networks.items()}
    for _ in range(2):
        metrics = train_step(x, y)
    assert train_step.experimental_get_tracing_count() == 1
    assert all(_changed(before[name], net) for name, net in defense.networks.items())
    assert set(metrics) == {"loss", "adv_loss", "adv_acc", "ot_loss", "generator_loss", "delta_l2"}
    assert metrics["delta_l2"].shape == (16,)
    assert all(np.all(np.isfinite(v.numpy())) for v in metrics.values())
    assert RvSTraining.run_name(defense.cfg) == "rvs-l2-eps0.5"


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_step_is_finite(precision):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        defense = _defense(precision=precision)
        x, y = _color_data(n=8)
        metrics = tf.function(defense.train_step)(x, y)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    scaled = isinstance(defense.generator_optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    assert all(np.all(np.isfinite(v.numpy())) for v in metrics.values())
