"""The perturbation generator and PGN's minimax step (paper section 3, eq. 4-5, Appendix D)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from models import build_classifier
from models.generator import GENERATOR_INPUTS, build_generator
from training.defenses import pgn_settings
from training.config import DefenseConfig, TrainConfig
from training.defenses.pgn import PGNTraining, input_gradient, tanh_box_image
from tests.helpers import changed as _changed, color_data, weights as _weights


def _color_data(n=64, **kwargs):
    return color_data(n, **kwargs)


def test_generator_inputs_agree_with_the_command_line():
    assert pgn_settings.GENERATOR_INPUTS == GENERATOR_INPUTS


@pytest.mark.parametrize("shape, classes", [((28, 28, 1), 10), ((32, 32, 3), 10), ((32, 32, 3), 100)])
def test_generator_output_matches_the_image(shape, classes):
    generator = build_generator(classes, shape, width=0.25)
    batch = [np.zeros((2,) + shape, np.float32), np.zeros((2,) + shape, np.float32),
             np.eye(classes, dtype=np.float32)[:2]]
    assert generator(batch).shape == (2,) + shape


def test_generator_at_full_width_follows_table1():
    generator = build_generator(10, (32, 32, 3))
    assert generator.get_layer("fc1").units == 1024
    assert generator.get_layer("fc2").units == 8 * 8 * 128
    assert [generator.get_layer(n).strides for n in ("up1", "up2")] == [(2, 2), (2, 2)]
    assert generator.get_layer("w").filters == 3


def test_eq5_stays_in_the_box_at_the_extremes_and_is_the_identity_for_zero():
    x = tf.constant(np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3)), np.full((4, 4, 3), 0.3)]), tf.float32)
    for w in (-100.0, 100.0, 0.0):
        x_adv = tanh_box_image(x, tf.fill(tf.shape(x), w)).numpy()
        assert np.all(np.isfinite(x_adv)) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    np.testing.assert_allclose(tanh_box_image(x, tf.zeros_like(x)).numpy(), x.numpy(), atol=1e-5)


def _defense(c_l=50.0, update="alternating", inputs="grad,image,label", lr=5e-4, seed=0):
    tf.keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    cfg = DefenseConfig(defense="pgn", c_l=c_l, pgn_update=update, pgn_inputs=inputs, gen_width=0.25)
    defense = PGNTraining(classifier, cfg, TrainConfig(lr=lr), tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


def test_each_network_update_touches_only_its_own_weights():
    defense = _defense()
    x, y = _color_data()
    grad, _ = input_gradient(defense.classifier, x, y, 3)
    classifier_before, generator_before = _weights(defense.classifier), _weights(defense.generator)
    defense._generator_update(x, y, grad)
    assert _changed(generator_before, defense.generator)
    assert not _changed(classifier_before, defense.classifier)
    generator_before = _weights(defense.generator)
    defense.classifier_update(x, tanh_box_image(x, tf.zeros_like(x)), y)
    assert _changed(classifier_before, defense.classifier)
    assert not _changed(generator_before, defense.generator)


@pytest.fixture(scope="module")
def frozen_classifier():
    """A small classifier trained (clean) for a few steps on separable colour classes."""
    defense = _defense(lr=1e-3)
    x, y = _color_data()
    step = tf.function(lambda x, y: defense.classifier_update(x, x, y))
    for _ in range(30):
        step(x, y)
    return defense.classifier


def _attack_with_frozen_classifier(classifier, c_l, steps=80):
    """Trains only the generator against ``classifier``; returns (clean CE, adversarial CE, mean L2)."""
    defense = _defense(c_l=c_l, lr=2e-3)
    defense.classifier = classifier
    x, y = _color_data()
    grad, clean_logits = input_gradient(classifier, x, y, 3)
    step = tf.function(defense._generator_update)
    for _ in range(steps):
        step(x, y, grad)
    x_adv = defense.perturb(defense.networks, x, y)
    ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    norms = tf.sqrt(tf.reduce_sum(tf.square(x_adv - x), axis=[1, 2, 3]))
    return float(ce(y, clean_logits)), float(ce(y, classifier(x_adv))), float(tf.reduce_mean(norms))


@pytest.mark.slow
def test_pgn_learns_to_attack_a_frozen_classifier(frozen_classifier):
    clean_ce, adv_ce, mean_l2 = _attack_with_frozen_classifier(frozen_classifier, c_l=1.0)
    assert clean_ce < 0.1, "the classifier should have learnt the colour task"
    assert adv_ce > clean_ce + 1.0
    # Where -CE + c_L ||d||^2 is minimised, c_L ||d||^2 is at most the CE it buys (vs d = 0);
    # the slack is for a generator that is near, not at, its optimum.
    assert 0.0 < mean_l2 ** 2 < (adv_ce - clean_ce) / 1.0 + 0.5


@pytest.mark.slow
def test_a_larger_c_l_gives_smaller_perturbations(frozen_classifier):
    _, _, weak = _attack_with_frozen_classifier(frozen_classifier, c_l=20.0)
    _, _, strong = _attack_with_frozen_classifier(frozen_classifier, c_l=1.0)
    assert weak < 0.5 * strong


@pytest.mark.parametrize("inputs", [",".join(c) for n in (1, 2, 3) for c in itertools.combinations(GENERATOR_INPUTS, n)])
def test_every_input_subset_trains_a_step(inputs):
    defense = _defense(update="simultaneous", inputs=inputs)
    x, y = _color_data(n=8)
    generator_before = _weights(defense.generator)
    metrics = tf.function(defense.train_step)(x, y)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["generator_loss"]))
    assert _changed(generator_before, defense.generator)
    names = {t.name.split(":")[0] for t in defense.generator.inputs}
    assert names == set(inputs.split(","))


def test_simultaneous_and_alternating_steps_report_the_same_metrics():
    x, y = _color_data(n=16)
    keys = [set(tf.function(_defense(update=u).train_step)(x, y)) for u in ("simultaneous", "alternating")]
    assert keys[0] == keys[1] >= {"loss", "generator_loss", "adv_loss", "adv_acc", "clean_loss",
                                  "clean_acc", "fooled_rate", "delta_l2"}


def test_the_loss_gradient_input_points_against_the_probability_gradient():
    classifier = _defense().classifier  # untrained: gradients are far from vanishing
    x, y = _color_data(n=8)
    prob, _ = input_gradient(classifier, x, y, 3, "prob")
    loss, _ = input_gradient(classifier, x, y, 3, "loss")
    assert prob.shape == loss.shape == x.shape
    cosine = tf.reduce_sum(prob * loss) / (tf.norm(prob) * tf.norm(loss))
    assert float(cosine) < 0  # raising p_y lowers the loss


def _variant(scale="batch_mean", classifier_grad="fixed", inputs="grad,image,label", seed=0):
    tf.keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    cfg = DefenseConfig(defense="pgn", pgn_update="simultaneous", pgn_inputs=inputs, gen_width=0.25,
                        pgn_grad_scale=scale, pgn_classifier_grad=classifier_grad)
    defense = PGNTraining(classifier, cfg, TrainConfig(), tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


def test_each_gradient_scale_reaches_the_generator_with_its_documented_magnitude():
    classifier = _defense().classifier
    x, y = _color_data(n=8)
    batch_mean, _ = input_gradient(classifier, x, y, 3, scale="batch_mean")
    per_example, _ = input_gradient(classifier, x, y, 3, scale="per_example")
    unit, _ = input_gradient(classifier, x, y, 3, scale="unit")
    # the paper's input is each example's own gradient over the batch size
    np.testing.assert_allclose(per_example.numpy(), 8 * batch_mean.numpy(), rtol=1e-4, atol=1e-9)
    norms = tf.sqrt(tf.reduce_sum(tf.square(unit), axis=[1, 2, 3])).numpy()
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    cosine = tf.reduce_sum(unit * per_example, axis=[1, 2, 3]) / tf.norm(tf.reshape(per_example, (8, -1)), axis=1)
    np.testing.assert_allclose(cosine.numpy(), 1.0, rtol=1e-5)  # the same direction


def _flat(tensors):
    return np.concatenate([np.ravel(t.numpy()) for t in tensors])


def test_the_second_order_classifier_gradient_is_the_explicit_double_backprop_and_differs_from_the_first_order():
    x, y = _color_data(n=8)
    # G sees only the gradient, un-averaged, so x_adv depends on theta strongly through grad_x F.
    fixed, second = (_variant("per_example", g, inputs="grad") for g in ("fixed", "through_input_gradient"))
    second.generator.set_weights(fixed.generator.get_weights())
    second.classifier.set_weights(fixed.classifier.get_weights())
    for layer in (fixed.generator.get_layer("w"), second.generator.get_layer("w")):
        layer.kernel.assign(layer.kernel * 300.0)
    g_fixed, c_fixed, _ = fixed.simultaneous_gradients(x, y)
    g_second, c_second, _ = second.simultaneous_gradients(x, y)
    # The chain rule written out: dL/dtheta = dL/dtheta|x_adv fixed + d/dtheta <grad_x F(x; theta), v>,
    # v = dL/d(gradient input) at fixed theta; each piece from its own tape.
    variables = fixed.classifier.trainable_variables
    grad, _ = fixed._input_gradient(fixed.classifier, x, y)
    with tf.GradientTape() as tape:
        tape.watch(grad)
        x_adv = fixed._generate(fixed.generator, grad, x, y, training=True)
        loss, _, _ = fixed.classifier_objective(x, x_adv, y)
        loss = tf.reduce_mean(loss)
    v = tf.stop_gradient(tape.gradient(loss, grad))
    with tf.GradientTape() as tape:
        live, _ = fixed._input_gradient(fixed.classifier, x, y, constant=False)
        inner = tf.reduce_sum(live * v)
    through_input = _flat(tape.gradient(inner, variables))
    first, total = _flat(c_fixed), _flat(c_second)
    assert np.linalg.norm(total - first) > 1e-3 * np.linalg.norm(first)  # measurable here
    np.testing.assert_allclose(total, first + through_input, rtol=0,
                               atol=1e-3 * np.linalg.norm(through_input) + 1e-7)
    # both paths give the generator the same gradient: G's loss does not see theta's path
    np.testing.assert_allclose(_flat(g_fixed), _flat(g_second), rtol=1e-4, atol=1e-6)


def test_the_second_order_path_needs_the_simultaneous_update():
    with pytest.raises(ValueError, match="through_input_gradient needs --pgn_update simultaneous"):
        DefenseConfig(defense="pgn", pgn_update="alternating", pgn_classifier_grad="through_input_gradient").validate()
    with pytest.raises(ValueError, match="--pgn_grad_scale must be one of"):
        DefenseConfig(defense="pgn", pgn_grad_scale="mean").validate()


@pytest.mark.parametrize("scale", ["batch_mean", "per_example", "unit"])
def test_the_monitor_measures_how_far_x_adv_moves_without_the_gradient_input(scale):
    defense = _variant(scale)
    x, y = _color_data(n=8)
    x_adv = defense.perturb(defense.networks, x, y)
    diagnostics = {k: float(v) for k, v in defense.monitor(defense.networks, x, y, x_adv).items()}
    assert diagnostics["zeroed_grad_shift_l2"] > 0.0
    paper = _variant("batch_mean")  # the same seed: the same classifier
    paper_rms = float(paper.monitor(paper.networks, x, y, x_adv)["grad_input_rms"])
    expected_rms = {"batch_mean": paper_rms, "per_example": 8 * paper_rms, "unit": 1 / np.sqrt(16 * 16 * 3)}[scale]
    np.testing.assert_allclose(diagnostics["grad_input_rms"], expected_rms, rtol=1e-4)
    assert _variant(scale, inputs="image,label").monitor(defense.networks, x, y, x_adv) == {}


def test_the_generator_takes_the_reference_codes_initialiser():
    he = build_generator(3, (16, 16, 3), width=0.25, kernel_initializer="he_normal")
    glorot = build_generator(3, (16, 16, 3), width=0.25)
    for name in ("fc1", "up1", "conv1", "w"):
        assert type(he.get_layer(name).kernel_initializer).__name__ == "HeNormal"
        assert type(glorot.get_layer(name).kernel_initializer).__name__ == "GlorotUniform"
