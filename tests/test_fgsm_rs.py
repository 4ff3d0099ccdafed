"""--defense fgsm_rs (Wong, Rice, Kolter 2020): random start, one 1.25-eps step, projected."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import fast_gradient_method
from attacks.projection import l2_norm
from models import build_classifier
from training.config import DefenseConfig, TrainConfig
from training.defenses import NAMES, make_defense
from training.defenses.fgsm_rs import FGSMRSTraining
from tests.helpers import changed, color_data, weights


def _defense(seed=0, **settings):
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    defense = make_defense(classifier, DefenseConfig("fgsm_rs", **settings), TrainConfig(),
                           tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


def _attack(defense, x, y):
    return defense.perturb(defense.networks, x, y).numpy()


def test_registered_with_l2_by_default_and_the_papers_linf_radius_as_an_option():
    assert "fgsm_rs" in NAMES and isinstance(_defense(), FGSMRSTraining)
    assert DefenseConfig("fgsm_rs").resolved().eps == 0.5
    assert DefenseConfig("fgsm_rs", fgsm_rs_norm="inf").resolved().eps == pytest.approx(8 / 255)
    assert DefenseConfig("fgsm_rs").fgsm_rs_step == 1.25


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_x_adv_stays_in_the_ball_and_the_box(norm):
    defense = _defense(fgsm_rs_norm=norm)
    x, y = color_data(16)
    x_adv = _attack(defense, x, y)
    delta = x_adv - x.numpy()
    eps = defense.cfg.eps
    size = np.abs(delta).reshape(16, -1).max(axis=1) if norm == "inf" else l2_norm(delta).numpy()
    assert np.all(size <= eps + 1e-5) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.mean(size) > 0.5 * eps  # a 1.25-eps step mostly ends on the ball's boundary


def test_the_random_start_makes_it_differ_from_fgm_and_between_draws():
    defense = _defense()
    x, y = color_data(16)
    first, second = _attack(defense, x, y), _attack(defense, x, y)
    assert not np.allclose(first, second)  # a fresh start per call
    fgm = fast_gradient_method(lambda t: defense.classifier(t, training=False), x, 0.5, 2,
                               clip_min=0.0, clip_max=1.0, y=y).numpy()
    assert np.abs(first - fgm).max() > 1e-3


def test_a_tiny_step_leaves_the_uniform_start():
    defense = _defense(fgsm_rs_step=1e-6, fgsm_rs_norm="inf")
    x, y = color_data(16)
    delta = _attack(defense, x, y) - x.numpy()
    inside = (x.numpy() > 0.05) & (x.numpy() < 0.95)  # away from the box: the start is not clipped
    eps = defense.cfg.eps
    assert np.abs(delta[inside]).max() <= eps + 1e-6
    assert np.abs(np.mean(delta[inside] / eps)) < 0.05 and np.std(delta[inside] / eps) == pytest.approx(
        1 / np.sqrt(3), abs=0.05)  # U(-eps, eps)


def test_zero_eps_returns_x():
    defense = _defense(eps=0.0)
    x, y = color_data(8)
    np.testing.assert_allclose(_attack(defense, x, y), x.numpy(), atol=1e-7)


def test_a_compiled_step_traces_once_and_trains_the_classifier():
    defense = _defense()
    x, y = color_data(32)
    before = weights(defense.classifier)
    step = tf.function(defense.train_step)
    losses = [float(step(x, y)["loss"]) for _ in range(3)]
    assert step.experimental_get_tracing_count() == 1
    assert changed(before, defense.classifier) and all(np.isfinite(losses))
