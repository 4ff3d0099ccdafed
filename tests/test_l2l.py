"""The L2L attacker network and the L2L defense's step (docs/methods.md section 3)."""
from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.projection import l2_norm
from models import build_classifier
from models.attacker import ATTACKER_SIZES, build_attacker
from training.config import NORMS, DefenseConfig, TrainConfig
from training.defenses.base import cross_entropy
from training.defenses.l2l import L2LTraining, bounded_perturbation, l2l_attacker_loss, scaled_loss_gradient
from training.ema import WeightEMA
from training.loop import compiled_train_step
from tests.helpers import changed as _changed, color_data, weights as _weights


def _color_data(n=32, **kwargs):
    return color_data(n, **kwargs)

L2L_VARIANTS = DefenseConfig.setting_field("l2l", "l2l_variant").metadata["choices"]
COMBOS = list(itertools.product(L2L_VARIANTS, NORMS))
TOL = 1e-5  # float32 rounding of x + delta - x


@pytest.fixture(scope="module", autouse=True)
def _no_graph_rewrites():
    """Grappler's graph rewrites cost 1-3 s per compiled step here and change no result: off for
    this module, then restored (the option is process-wide)."""
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


def _defense(variant="grad", norm="2", eps=0.5, attacker_lr=1e-3, lr=5e-4, precision="float32", seed=0,
             size="wide"):
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    cfg = DefenseConfig(defense="l2l", eps=eps, l2l_variant=variant, l2l_norm=norm,
                        attacker_lr=attacker_lr, gen_width=0.125, l2l_attacker=size)
    defense = L2LTraining(classifier, cfg, TrainConfig(lr=lr, precision=precision),
                          tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


def _norms(delta, norm):
    if norm == "inf":
        return tf.reduce_max(tf.abs(delta), axis=[1, 2, 3]).numpy()
    return l2_norm(delta).numpy()


def test_attacker_at_full_width_follows_the_public_code():
    attacker = build_attacker((32, 32, 3))
    assert attacker.get_layer("stem").kernel.shape == (3, 3, 6, 64)
    assert [attacker.get_layer(f"block{i}_conv2").filters for i in (1, 2, 3, 4)] == [128, 256, 128, 64]
    assert all(attacker.get_layer(f"block{i}_shortcut").kernel_size == (1, 1) for i in (1, 2, 3, 4))
    assert attacker.get_layer("h").filters == 3 and attacker.output.dtype == "float32"
    naive = build_attacker((16, 16, 1), inputs=("image",), width=0.125)
    assert naive.get_layer("stem").kernel.shape == (3, 3, 1, 8)
    assert naive([np.zeros((2, 16, 16, 1), np.float32)]).shape == (2, 16, 16, 1)
    with pytest.raises(ValueError):
        build_attacker((16, 16, 3), inputs=("label",))


def test_the_attacker_sizes_follow_the_public_code():
    assert ATTACKER_SIZES == DefenseConfig.setting_field("l2l", "l2l_attacker").metadata["choices"]
    assert DefenseConfig("l2l").l2l_attacker == "wide"  # the public training scripts' WideAttacker
    two = build_attacker((32, 32, 3), size="two_layer")
    assert [two.get_layer(f"block{i}_conv2").filters for i in (1, 2)] == [128, 64]
    assert not any(layer.name == "block3_conv2" for layer in two.layers)
    slim = build_attacker((32, 32, 3), size="slim")
    assert slim.get_layer("stem").kernel.shape == (3, 3, 6, 128) and slim.get_layer("stem").strides == (2, 2)
    assert [slim.get_layer(f"block{i}_conv2").filters for i in (1, 2)] == [256, 128]
    assert slim.get_layer("upsample").filters == 16 and slim.get_layer("upsample").strides == (2, 2)
    assert slim.get_layer("h_unscaled").kernel.shape == (3, 3, 16 + 6, 3)  # sees [upsampled, x, g]
    assert float(slim.get_layer("h").scale.numpy()) == 5.0
    assert slim.output.dtype == "float32"
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    assert slim([x, x]).shape == (2, 32, 32, 3)
    sizes = {s: build_attacker((32, 32, 3), size=s).count_params() for s in ATTACKER_SIZES}
    assert sizes["two_layer"] < sizes["slim"] < sizes["wide"]
    with pytest.raises(ValueError, match="even"):
        build_attacker((15, 15, 3), size="slim")


@pytest.mark.parametrize("size", ["slim", "two_layer"])
def test_each_attacker_size_trains_in_one_compiled_step(size):
    defense = _defense(size=size)
    x, y = _color_data(n=8)
    attacker_before = _weights(defense.attacker)
    metrics = tf.function(defense.train_step)(x, y)
    assert _changed(attacker_before, defense.attacker)
    assert np.isfinite(float(metrics["attacker_loss"]))
    x_adv = defense.perturb(defense.networks, tf.constant(x), tf.constant(y))
    assert np.all(l2_norm(x_adv - x).numpy() <= 0.5 + 1e-5)
    assert L2LTraining.run_name(defense.cfg).startswith(f"l2l-grad-{size}-")


@pytest.mark.parametrize("norm", NORMS)
def test_the_output_map_stays_in_the_ball_and_is_smooth_at_zero(norm):
    eps = 0.5
    rng = np.random.default_rng(0)
    for scale in (1e-8, 1.0, 1e6):
        h = tf.constant(scale * rng.normal(size=(4, 8, 8, 3)), tf.float32)
        assert np.all(_norms(bounded_perturbation(h, norm, eps), norm) <= eps + TOL)
    h = tf.constant(1e-4 * rng.normal(size=(2, 8, 8, 3)), tf.float32)
    small = bounded_perturbation(h, norm, eps).numpy()
    np.testing.assert_allclose(small, eps * h.numpy(), rtol=1e-3, atol=1e-9)  # eps * h to first order
    zero = tf.zeros((2, 8, 8, 3))
    with tf.GradientTape() as tape:
        tape.watch(zero)
        delta = bounded_perturbation(zero, norm, eps)
        total = tf.reduce_sum(delta)
    grad = tape.gradient(total, zero).numpy()
    assert np.all(delta.numpy() == 0) and np.all(np.isfinite(grad))


def test_the_gradient_input_is_scaled_by_one_maximum_over_the_batch():
    defense = _defense()
    x, y = _color_data(n=8)
    grad, logits = scaled_loss_gradient(defense.classifier, x, y)
    per_example_max = tf.reduce_max(tf.abs(grad), axis=[1, 2, 3]).numpy()
    assert grad.shape == x.shape and logits.shape == (8, 3)
    assert per_example_max.max() == pytest.approx(1.0) and per_example_max.min() < 0.99
    flat, _ = scaled_loss_gradient(lambda images, training: 0.0 * images[:, 0, 0, :], x, y)
    assert np.all(flat.numpy() == 0)  # a vanishing gradient gives g = 0, not NaN


@pytest.mark.parametrize("variant, norm", COMBOS)
def test_x_adv_stays_in_the_ball_and_the_box_for_extreme_outputs(variant, norm):
    eps = 0.3 if norm == "inf" else 2.0
    defense = _defense(variant, norm, eps=eps)
    x = tf.constant(np.stack([np.zeros((16, 16, 3)), np.ones((16, 16, 3)), np.full((16, 16, 3), 0.5),
                              np.random.default_rng(0).uniform(size=(16, 16, 3))]), tf.float32)
    y = tf.constant([0, 1, 2, 0])
    out = defense.attacker.get_layer("h")
    kernel, bias = out.get_weights()
    for k, b in ((kernel * 1e4, bias + 1e3), (kernel * 1e4, bias - 1e3), (0 * kernel, 0 * bias)):
        out.set_weights([k, b])
        x_adv = defense.perturb(defense.networks, x, y).numpy()
        assert np.all(np.isfinite(x_adv)) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert np.all(_norms(x_adv - x, norm) <= eps + TOL)
    np.testing.assert_array_equal(x_adv, x.numpy())  # h = 0 leaves x as it is


@pytest.fixture(scope="module")
def frozen_classifier():
    """A small classifier trained (clean) a few steps on separable colour classes, still unsure."""
    defense = _defense(lr=1e-3)
    x, y = _color_data()
    step = tf.function(lambda x, y: defense.classifier_update(x, x, y))
    for _ in range(15):
        step(x, y)
    return defense.classifier


@pytest.mark.parametrize("norm, eps", [("2", 1.0), ("inf", 0.05)])
@pytest.mark.slow
def test_the_attacker_learns_to_attack_a_frozen_classifier(frozen_classifier, norm, eps):
    defense = _defense(norm=norm, eps=eps, attacker_lr=3e-3)
    defense.classifier = frozen_classifier
    x, y = _color_data()
    classifier_before = _weights(frozen_classifier)
    step = tf.function(defense.attacker_step)
    for _ in range(50):
        step(x, y)
    assert not _changed(classifier_before, frozen_classifier)
    delta = defense.perturb(defense.networks, x, y) - x
    # A random perturbation of the same L2 norm per example (L-inf: of the same L-inf norm).
    noise = tf.random.stateless_normal(x.shape, seed=[1, 2])
    if norm == "inf":
        noise = tf.sign(noise) * _norms(delta, norm)[:, None, None, None]
    else:
        noise = noise / l2_norm(noise)[:, None, None, None] * l2_norm(delta)[:, None, None, None]
    ce = lambda images: float(cross_entropy(y, frozen_classifier(images)))
    clean_ce, adv_ce, random_ce = ce(x), ce(x + delta), ce(tf.clip_by_value(x + noise, 0.0, 1.0))
    assert 0.1 < clean_ce < 1.0, "the classifier should have started to learn the colour task"
    assert adv_ce > random_ce + 0.1 and adv_ce > clean_ce + 0.1


def test_two_step_gradients_reach_the_weights_through_the_first_call(monkeypatch):
    defense = _defense("two_step")
    x, y = _color_data(n=8)

    def attacker_gradients():
        with tf.GradientTape() as tape:
            x_adv, _ = defense.adversarial(defense.attacker, defense.classifier, x, y, training=True)
            loss = l2l_attacker_loss(cross_entropy(y, defense.classifier(x_adv, training=False)))
        return [g.numpy() for g in tape.gradient(loss, defense.attacker.trainable_variables)]

    both = attacker_gradients()
    calls, real_call = [], defense.attacker_delta

    def constant_first_call(*args, **kwargs):
        delta, logits = real_call(*args, **kwargs)
        calls.append(delta)
        return (tf.stop_gradient(delta) if len(calls) == 1 else delta), logits

    monkeypatch.setattr(defense, "attacker_delta", constant_first_call)
    second_only = attacker_gradients()
    assert len(calls) == 2
    first_call_part = sum(np.sum(np.square(a - b)) for a, b in zip(both, second_only))
    assert first_call_part > 1e-3 * sum(np.sum(np.square(a)) for a in both)


@pytest.mark.parametrize("variant, norm", COMBOS)
@pytest.mark.slow
def test_a_compiled_step_trains_both_networks_and_traces_once(variant, norm):
    defense = _defense(variant, norm)
    x, y = _color_data(n=8)
    ema = WeightEMA(defense.networks, 0.998)
    step = tf.Variable(0, dtype=tf.int64)
    train_step = compiled_train_step(defense, ema, step)
    classifier_before, attacker_before = _weights(defense.classifier), _weights(defense.attacker)
    for _ in range(2):
        metrics = train_step(x, y)
    assert train_step.experimental_get_tracing_count() == 1 and int(step.numpy()) == 2
    assert _changed(classifier_before, defense.classifier) and _changed(attacker_before, defense.attacker)
    assert set(metrics) >= {"loss", "adv_loss", "adv_acc", "attacker_loss", "clean_loss", "delta_l2"}
    assert metrics["delta_l2"].shape == (8,)
    assert all(np.all(np.isfinite(v.numpy())) for v in metrics.values())
    x_adv = defense.perturb(ema.shadows, x, y)  # the loop's per-epoch attack on the EMA copies
    assert np.all(_norms(x_adv - x, norm) <= defense.cfg.eps + TOL)
    assert L2LTraining.run_name(defense.cfg) == f"l2l-{variant}-l{norm}-eps0.5"


def test_the_classifier_update_leaves_the_attacker_unchanged(monkeypatch):
    defense = _defense("two_step")
    x, y = _color_data(n=8)
    monkeypatch.setattr(defense, "attacker_step", lambda x, y: {"attacker_loss": tf.constant(0.0)})
    classifier_before = _weights(defense.classifier)
    attacker_before = _weights(defense.attacker, trainable=False)  # batch-norm statistics too
    tf.function(defense.train_step)(x, y)
    assert _changed(classifier_before, defense.classifier)
    assert not _changed(attacker_before, defense.attacker, trainable=False)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_step_runs(precision):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        defense = _defense(precision=precision)
        scaled = isinstance(defense.optimizers["attacker"], keras.optimizers.LossScaleOptimizer)
        assert scaled == (precision == "mixed_float16")  # bfloat16 needs no loss scale
        x, y = _color_data(n=8)
        attacker_before = _weights(defense.attacker)
        metrics = tf.function(defense.train_step)(x, y)
        assert _changed(attacker_before, defense.attacker)
        assert np.isfinite(float(metrics["loss"])) and metrics["delta_l2"].dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy(previous)
