"""``--defense fgsm_rs``'s declaration: fast adversarial training (training/defenses/fgsm_rs.py)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import NORMS, DefenseSettings, setting


@dataclasses.dataclass(frozen=True)
class FGSMRSSettings(DefenseSettings):
    name = "fgsm_rs"
    title = "FGSM-RS"
    marker = "P"
    trainer = "training.defenses.fgsm_rs:FGSMRSTraining"

    fgsm_rs_norm: str = setting("2", "the ball: L2 (this project's threat model, default eps 0.5) or L-inf (the "
                                "paper's, default eps 8/255).", choices=NORMS)
    fgsm_rs_step: float = setting(1.25, "the gradient step as a multiple of eps (Wong et al.: 1.25; larger steps "
                                  "overfit catastrophically sooner).", above=0.0)

    @property
    def norm(self) -> str:
        return self.fgsm_rs_norm


DEFENSES = (FGSMRSSettings,)
