"""``--defense l2l``'s declaration (training/defenses/l2l.py; docs/methods.md section 3).

``l2l_attacker`` defaults to ``wide``: every public training script (YuyangShi/Learning-to-Defend-
by-Learning-to-Attack, ``train_l2l_{1,2}[_interp]_cifar10.py``) builds ``WideAttacker``, and it is
the attacker every L2L run made before this setting existed was built with, so such a run (whose
config.json lacks the setting) reads and resumes as ``wide`` by the default alone.
"""
from __future__ import annotations

import dataclasses

from training.defenses.settings import NORMS, DefenseSettings, setting

ATTACKER_SIZES = ("slim", "two_layer", "wide")  # = models.attacker.ATTACKER_SIZES (a test checks)


@dataclasses.dataclass(frozen=True)
class L2LSettings(DefenseSettings):
    name = "l2l"
    title = "L2L"
    marker = "D"
    trainer = "training.defenses.l2l:L2LTraining"
    benchmark_variants = ("l2l_attacker=slim", "l2l_attacker=two_layer")

    l2l_norm: str = setting("2", "attacker's ball, L2 (||delta|| <= eps, this project's threat model) or "
                            "L-inf (eps * tanh, the public code; default eps 8/255).", choices=NORMS)
    l2l_variant: str = setting("grad", "grad (default), two_step or naive (image only).",
                               choices=("grad", "two_step", "naive"))
    l2l_attacker: str = setting("wide", "the attacker network's size from the public code's attacker.py: slim "
                                "(stride-2, two blocks), two_layer (two full-resolution blocks) or wide (four; the "
                                "public training scripts' choice).", choices=ATTACKER_SIZES)
    attacker_lr: float = setting(1e-3, "the attacker network's Adam learning rate (public code: 1e-3).",
                                 above=0.0)

    @property
    def norm(self) -> str:
        return self.l2l_norm


DEFENSES = (L2LSettings,)
