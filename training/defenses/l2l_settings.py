"""``--defense l2l``'s declaration (training/defenses/l2l.py; methods.md section 3)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import NORMS, DefenseSettings, setting


@dataclasses.dataclass(frozen=True)
class L2LSettings(DefenseSettings):
    name = "l2l"
    title = "L2L"
    marker = "D"
    trainer = "training.defenses.l2l:L2LTraining"

    l2l_norm: str = setting("2", "attacker's ball, L2 (||delta|| <= eps, this project's threat model) or "
                            "L-inf (eps * tanh, the public code; default eps 8/255).", choices=NORMS)
    l2l_variant: str = setting("grad", "grad (default), two_step or naive (image only).",
                               choices=("grad", "two_step", "naive"))
    attacker_lr: float = setting(1e-3, "the attacker network's Adam learning rate (public code: 1e-3).",
                                 above=0.0)

    @property
    def norm(self) -> str:
        return self.l2l_norm


DEFENSES = (L2LSettings,)
