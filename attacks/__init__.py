"""Gradient attacks with CleverHans 4.0.0's tf2 names and signatures, as compiled TF code.

Each attack works inside a tf.function (it adds its ops to the caller's graph, e.g. an
adversarial-training step) and standalone (called eagerly it runs through a module-level
tf.function, traced once per model_fn and input shape). Numerics are float32 throughout.

AutoAttack (Croce & Hein 2020) and its attacks: `autoattack` (attacks/autoattack.py, which
documents the protocol and the result object), `apgd`, `apgd_targeted`, `fab_targeted`,
`square_attack`. The functions `apgd` and `autoattack` shadow their modules' names here; the
modules are importlib.import_module("attacks.apgd") / ("attacks.autoattack").

On the other Keras 3 backends (KERAS_BACKEND=jax or torch) the same names give the keras.ops
attacks of attacks/keras_ops/ (AutoAttack's attacks, FGM and PGD; NumPy in and out) and this
package imports no TensorFlow; the other attacks (CW, DeepFool, MIM, the eps-ball helpers) are
TensorFlow's and load TensorFlow when first used (docs/backends.md).
"""

import importlib

import keras

if keras.backend.backend() == "tensorflow":
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
else:
    from attacks.autoattack import AutoAttackResult, autoattack
    from attacks.keras_ops.apgd import apgd, apgd_targeted
    from attacks.keras_ops.fab import fab_targeted
    from attacks.keras_ops.fgm import fast_gradient_method, projected_gradient_descent
    from attacks.keras_ops.square import square_attack

    _TENSORFLOW_ONLY = {"carlini_wagner_l2": "cw", "deepfool": "deepfool", "momentum_iterative_method": "mim",
                        "dlr_loss": "apgd", "targeted_dlr_loss": "apgd", "loss_gradient": "fgm",
                        "optimize_linear": "fgm", "cross_entropy_loss": "losses", "margin_loss": "losses",
                        "clip_eta": "projection", "clip_to_box": "projection", "l2_norm": "projection",
                        "project": "projection", "random_lp_vector": "projection"}

    def __getattr__(name):
        if name not in _TENSORFLOW_ONLY:
            raise AttributeError(f"module 'attacks' has no attribute {name!r}")
        # Loading attacks.apgd would rebind the name `apgd` to that module: keep the keras.ops function.
        kept = {n: globals()[n] for n in ("apgd", "autoattack")}
        value = getattr(importlib.import_module(f"attacks.{_TENSORFLOW_ONLY[name]}"), name)
        globals().update(kept)
        return value

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
