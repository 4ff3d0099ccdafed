"""``--defense fgm`` and ``--defense pgd``: adversarial training against L2 gradient attacks.

FGM is Goodfellow et al.'s one-step attack; PGD is Madry et al.'s, 10 iterations (Table 1),
step eps / steps * 5/3 as the PGN reference code, with a random start in the L2 ball. Both run
inside the compiled train step; the attack's gradients, norms and clipping are float32 even
when the classifier computes in float16 (``attacks`` casts).
"""
from __future__ import annotations

from attacks import fast_gradient_method, projected_gradient_descent
from training.defenses.base import Defense


def _logits_fn(networks):
    classifier = networks["classifier"]
    return lambda images: classifier(images, training=False)


class FGMTraining(Defense):
    name = "fgm"

    @staticmethod
    def run_name(cfg):
        return f"fgm-eps{cfg.eps:g}"

    def perturb(self, networks, x, y):
        return fast_gradient_method(_logits_fn(networks), x, self.cfg.eps, 2,
                                    clip_min=0.0, clip_max=1.0, y=y)


class PGDTraining(Defense):
    name = "pgd"

    @staticmethod
    def run_name(cfg):
        return f"pgd{cfg.pgd_steps}-eps{cfg.eps:g}"

    def perturb(self, networks, x, y):
        steps = self.cfg.pgd_steps
        step_size = min(self.cfg.eps, self.cfg.eps / steps * 5 / 3)  # one step may not leave the ball
        return projected_gradient_descent(
            _logits_fn(networks), x, self.cfg.eps, step_size, steps, 2,
            clip_min=0.0, clip_max=1.0, y=y, rand_init=True, rng=self.rng)

