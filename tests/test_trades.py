"""--defense trades (Zhang et al. 2019): CE(F(x)) + beta KL(F(x) || F(x_adv)), x_adv from PGD on the KL."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.projection import l2_norm
from models import build_classifier
from training.config import DefenseConfig, TrainConfig
from training.defenses import NAMES, make_defense
from training.defenses.trades import TRADESTraining, kl_attack, step_size, trades_kl, trades_loss
from tests.helpers import changed, color_data, weights


def _defense(seed=0, **settings):
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(3, (16, 16, 3), 0.125)
    defense = make_defense(classifier, DefenseConfig("trades", **settings), TrainConfig(),
                           tf.random.Generator.from_seed(seed))
    defense.build()
    return defense


def test_registered_with_the_published_settings():
    cfg = DefenseConfig("trades")
    assert "trades" in NAMES and isinstance(_defense(), TRADESTraining)
    assert (cfg.trades_beta, cfg.trades_steps, cfg.resolved().eps) == (6.0, 10, 0.5)
    assert DefenseConfig("trades", trades_norm="inf").resolved().eps == pytest.approx(8 / 255)
    assert step_size("2", 0.5, 10) == pytest.approx(0.1)  # the published L2 code's 2 eps / steps
    assert step_size("inf", 0.031, 10) == pytest.approx(0.007)


def test_the_kl_is_zero_at_equal_logits_and_matches_its_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(trades_kl(a, a).numpy(), 0.0, atol=1e-6)
    p, q = tf.nn.softmax(a).numpy(), tf.nn.softmax(b).numpy()
    np.testing.assert_allclose(trades_kl(a, b).numpy(), (p * np.log(p / q)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(trades_loss(np.ones(4), np.full(4, 2.0), 6.0), 13.0)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_x_adv_stays_in_the_ball_and_the_box_and_raises_the_kl(norm):
    defense = _defense(trades_norm=norm)
    x, y = color_data(16)
    x_adv = defense.perturb(defense.networks, x, y)
    delta = (x_adv - x).numpy()
    eps = defense.cfg.eps
    size = np.abs(delta).reshape(16, -1).max(axis=1) if norm == "inf" else l2_norm(delta).numpy()
    assert np.all(size <= eps + 1e-5) and float(tf.reduce_min(x_adv)) >= 0 and float(tf.reduce_max(x_adv)) <= 1
    logits = lambda t: defense.classifier(t, training=False)  # noqa: E731
    start = x + 0.001 * tf.random.normal(x.shape, seed=1)
    kl_start = trades_kl(logits(x), logits(start)).numpy().mean()
    assert trades_kl(logits(x), logits(x_adv)).numpy().mean() > 10 * kl_start


def test_more_steps_find_a_larger_kl():
    defense = _defense()
    x, _ = color_data(16)
    logits = lambda t: defense.classifier(t, training=False)  # noqa: E731
    start = x + 0.001 * tf.random.normal(x.shape, seed=1)
    kls = [trades_kl(logits(x), logits(kl_attack(logits, x, logits(x), start, eps=0.5, step=0.1, steps=n,
                                                   norm="2"))).numpy().mean() for n in (1, 10)]
    assert kls[1] > kls[0]


def test_a_compiled_step_traces_once_trains_and_reports_the_kl():
    defense = _defense(trades_steps=3)
    x, y = color_data(32)
    before = weights(defense.classifier)
    step = tf.function(defense.train_step)
    metrics = [step(x, y) for _ in range(2)][-1]
    assert step.experimental_get_tracing_count() == 1 and changed(before, defense.classifier)
    loss, ce, kl = (float(metrics[k]) for k in ("loss", "clean_loss", "kl_loss"))
    assert kl >= 0 and loss == pytest.approx(ce + 6.0 * kl, rel=1e-4)


def test_beta_zero_is_clean_training_on_x():
    trades = _defense(trades_beta=0.0, trades_steps=1)
    keras.utils.set_random_seed(0)
    clean = make_defense(build_classifier(3, (16, 16, 3), 0.125), DefenseConfig("none"), TrainConfig(),
                         tf.random.Generator.from_seed(0))
    clean.build()
    x, y = color_data(32)
    for defense in (trades, clean):
        defense.train_step(x, y)
    for a, b in zip(trades.classifier.trainable_variables, clean.classifier.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
