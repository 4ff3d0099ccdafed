"""``--defense rvs``'s declaration (training/defenses/rvs.py; docs/methods.md section 4)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import NORMS, DefenseSettings, setting


@dataclasses.dataclass(frozen=True)
class RvSSettings(DefenseSettings):
    name = "rvs"
    title = "RvS"
    marker = "v"
    trainer = "training.defenses.rvs:RvSTraining"

    rvs_norm: str = setting("inf", "the synthesised perturbation's ball (published: L-inf, default eps 8/255).",
                            choices=NORMS)
    rvs_z_dim: int = setting(640, "dimension of the generator's noise input.", at_least=1)
    rvs_gen_lr: float = setting(0.01, "the generator's momentum-SGD learning rate.", above=0.0)
    label_smoothing: float = setting(0.5, "label smoothing of the classifier's cross-entropy.",
                                     at_least=0.0, below=1.0)
    ot_weight: float = setting(1.0, "weight of the optimal-transport term in the classifier loss.", at_least=0.0)

    @property
    def norm(self) -> str:
        return self.rvs_norm


DEFENSES = (RvSSettings,)
