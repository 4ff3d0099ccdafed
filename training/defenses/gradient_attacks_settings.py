"""``--defense fgm`` and ``--defense pgd``'s declarations (training/defenses/gradient_attacks.py)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import DefenseSettings, setting


@dataclasses.dataclass(frozen=True)
class FGMSettings(DefenseSettings):
    """FGM-AT has only the shared settings (eps, adv_coeff)."""
    name = "fgm"
    title = "FGM-AT"
    marker = "s"
    trainer = "training.defenses.gradient_attacks:FGMTraining"


@dataclasses.dataclass(frozen=True)
class PGDSettings(DefenseSettings):
    name = "pgd"
    title = "PGD-AT"
    marker = "^"
    trainer = "training.defenses.gradient_attacks:PGDTraining"

    pgd_steps: int = setting(10, "iterations (Table 1 'PGD iter'; step eps/steps*5/3, random start).",
                             at_least=1)


DEFENSES = (FGMSettings, PGDSettings)
