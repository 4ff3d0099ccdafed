"""``--defense none``'s declaration: clean training has no settings of its own."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import DefenseSettings


@dataclasses.dataclass(frozen=True)
class CleanSettings(DefenseSettings):
    name = "none"
    title = "clean"
    marker = "*"
    trainer = "training.defenses.clean:CleanTraining"


DEFENSES = (CleanSettings,)
