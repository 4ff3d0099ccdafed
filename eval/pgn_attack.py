"""PGN as an attack (paper section 4.3, Figure 3): a generator trained against a fixed
classifier, for a sweep of c_L, compared with FGM and PGD at a sweep of eps by accuracy against
mean perturbation norm on the test split."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import attacks
import data
from training.config import DefenseConfig, TrainConfig
from training.defenses.pgn import PGNTraining


def figure3_points(target, train_images, train_labels, cfg, say=print) -> dict:
    """{"pgn": [{"c_l", "accuracy", "mean_l2"}...], "fgm": [{"eps", ...}], "pgd": [...]} on target's test set."""
    points = {"pgn": [], "fgm": [], "pgd": []}
    gen_width = target.run.settings.get("defense.gen_width", 1.0)
    for c_l in cfg.pgn_c_l:
        say(f"PGN attack on {target.run.name}: training a generator with c_L {c_l:g} for {cfg.pgn_epochs} epoch(s)")
        x_adv = _train_generator_attack(target, train_images, train_labels, c_l, gen_width, cfg)
        points["pgn"].append({"c_l": c_l, **_point(target, x_adv, cfg.batch_size)})
    for eps in cfg.pgn_eps:
        for name in ("fgm", "pgd"):
            x_adv = _gradient_attack(name, target, eps, cfg.batch_size)
            points[name].append({"eps": eps, **_point(target, x_adv, cfg.batch_size)})
    return points


def _train_generator_attack(target, train_images, train_labels, c_l, gen_width, cfg) -> np.ndarray:
    tf.keras.utils.set_random_seed(0)
    pgn = PGNTraining(target.model, DefenseConfig(defense="pgn", c_l=c_l, gen_width=gen_width),
                      TrainConfig(), tf.random.Generator.from_seed(0))
    pgn.build()
    step = tf.function(pgn.generator_step)
    for epoch in range(cfg.pgn_epochs):
        for x, y in data.train_batches(train_images, train_labels, batch_size=cfg.batch_size, seed=0,
                                       epoch=epoch, augment="none"):
            step(x, y)
    perturb = tf.function(lambda x, y: pgn.perturb(pgn.networks, x, y))
    return np.concatenate([perturb(tf.constant(target.x[i:i + cfg.batch_size]),
                                   tf.constant(target.y[i:i + cfg.batch_size])).numpy()
                           for i in range(0, len(target.y), cfg.batch_size)])


def _gradient_attack(name, target, eps, batch_size) -> np.ndarray:
    out = []
    for i in range(0, len(target.y), batch_size):
        x, y = tf.constant(target.x[i:i + batch_size]), tf.constant(target.y[i:i + batch_size])
        if name == "fgm":
            x_adv = attacks.fast_gradient_method(target.model_fn, x, eps, 2, y=y, clip_min=0.0, clip_max=1.0)
        else:  # PGD-10 with the training step rule, no random start: a deterministic curve
            x_adv = attacks.projected_gradient_descent(target.model_fn, x, eps, eps / 6, 10, 2, y=y,
                                                       clip_min=0.0, clip_max=1.0)
        out.append(np.asarray(x_adv))
    return np.concatenate(out)


def _point(target, x_adv, batch_size) -> dict:
    predictions = target.predict(x_adv, batch_size)
    norms = np.sqrt(((x_adv - target.x) ** 2).reshape(len(x_adv), -1).sum(axis=1))
    return {"accuracy": float(np.mean(predictions == target.y)), "mean_l2": float(norms.mean())}
