"""Gradient attacks with CleverHans 4.0.0's tf2 names and signatures, as compiled TF code.

Each attack works inside a tf.function (it adds its ops to the caller's graph, e.g. an
adversarial-training step) and standalone (called eagerly it runs through a module-level
tf.function, traced once per model_fn and input shape). Numerics are float32 throughout.

AutoAttack (Croce & Hein 2020) and its attacks: `autoattack` (attacks/autoattack.py, which
documents the protocol and the result object), `apgd`, `apgd_targeted`, `fab_targeted`,
`square_attack`. The functions `apgd` and `autoattack` shadow their modules' names here; the
modules are importlib.import_module("attacks.apgd") / ("attacks.autoattack").
"""

from attacks.apgd import apgd, apgd_targeted, dlr_loss, targeted_dlr_loss
from attacks.autoattack import AutoAttackResult, autoattack
from attacks.cw import carlini_wagner_l2
from attacks.deepfool import deepfool
from attacks.fab import fab_targeted
from attacks.fgm import fast_gradient_method, loss_gradient, optimize_linear
from attacks.losses import cross_entropy_loss, margin_loss
from attacks.mim import momentum_iterative_method
from attacks.pgd import projected_gradient_descent
from attacks.projection import clip_eta, clip_to_box, l2_norm, project, random_lp_vector
from attacks.square import square_attack

__all__ = [
    "AutoAttackResult",
    "apgd",
    "apgd_targeted",
    "autoattack",
    "carlini_wagner_l2",
    "clip_eta",
    "clip_to_box",
    "cross_entropy_loss",
    "deepfool",
    "dlr_loss",
    "fab_targeted",
    "fast_gradient_method",
    "l2_norm",
    "loss_gradient",
    "margin_loss",
    "momentum_iterative_method",
    "optimize_linear",
    "project",
    "projected_gradient_descent",
    "random_lp_vector",
    "square_attack",
    "targeted_dlr_loss",
]
