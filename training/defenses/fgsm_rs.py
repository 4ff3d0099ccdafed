"""``--defense fgsm_rs``: fast adversarial training, "Fast is better than free" (Wong, Rice, Kolter 2020).

FGM-AT with a random start: per example

    delta0 ~ U(eps-ball)                       uniform in the ball (``--fgsm_rs_norm``)
    x0     = clip(x + delta0, 0, 1)
    x1     = x0 + 1.25 eps * direction         sign of the gradient (L-inf) or gradient / ||gradient||_2 (L2)
    x_adv  = project(x1 onto the eps-ball around x, then onto [0, 1])

then the classifier step of eq. 4 on x_adv (with Table 1's a = 1, CE(F(x_adv)) alone, as the
paper). One forward and backward pass for the attack, as FGM: the cheap baseline that a learned
attacker's cost must be measured against. The paper's setting is L-inf at 8/255 (86.06% clean,
46.06% under PGD on CIFAR-10, its README); this project's threat model is L2, so L2 at eps 0.5 is
the default, and ``--fgsm_rs_norm inf`` gives the paper's (eps 8/255 through the one radius
resolution, ``DefenseConfig.resolved``). The step 1.25 eps (``--fgsm_rs_step``) is the paper's; it
exceeds the radius, so the random start matters: the step then lands anywhere on the boundary
side of the ball instead of always at the same corner.

Catastrophic overfitting (the paper's section 5): past some epoch the classifier learns to defeat
this one-step attack alone, a kind of gradient masking. Within an epoch robustness to PGD falls to
near 0 while accuracy under FGSM-RS jumps up, often above the benign accuracy's trend. What the
user sees in the per-epoch monitor: ``monitor_adv_acc`` (accuracy under the training attack, the
epoch line's "acc under training attack") rises sharply between two epochs while ``test_acc`` keeps
its course. The monitor attacks with FGSM-RS itself, so it cannot show the collapse: check it with
``--mode eval``, whose MIM (100 iterations) and the masking check's large-budget PGD do; a gap of
MIM accuracy far below FGM accuracy, or a FAILED masking check, is the signature. The paper's
remedies are a smaller step, early stopping on a PGD-evaluated hold-out, or fewer epochs; with
``--keep_checkpoints all`` an epoch from before the jump can be evaluated instead.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from attacks import fast_gradient_method
from attacks.projection import project, random_lp_vector
from training.defenses.base import Defense


class FGSMRSTraining(Defense):
    name = "fgsm_rs"

    @staticmethod
    def run_name(cfg):
        return f"fgsm_rs-l{cfg.fgsm_rs_norm}-eps{cfg.eps:g}"

    def perturb(self, networks, x, y):
        # Not attacks.pgd with one iteration: its step is 1.25 eps, beyond the ball, which PGD's
        # CleverHans-compatible checks refuse (eps_iter <= eps).
        classifier = networks["classifier"]
        norm = np.inf if self.cfg.fgsm_rs_norm == "inf" else 2
        eps = self.cfg.eps
        x = tf.cast(x, tf.float32)
        start = tf.clip_by_value(x + random_lp_vector(tf.shape(x), norm, eps, rng=self.rng), 0.0, 1.0)
        x_step = fast_gradient_method(lambda images: classifier(images, training=False), start,
                                      self.cfg.fgsm_rs_step * eps, norm, clip_min=0.0, clip_max=1.0, y=y)
        return project(x_step, x, norm, eps, 0.0, 1.0)
