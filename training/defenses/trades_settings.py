"""``--defense trades``'s declaration (training/defenses/trades.py)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import NORMS, DefenseSettings, setting


@dataclasses.dataclass(frozen=True)
class TRADESSettings(DefenseSettings):
    name = "trades"
    title = "TRADES"
    marker = "X"
    trainer = "training.defenses.trades:TRADESTraining"

    trades_beta: float = setting(6.0, "weight of KL(F(x) || F(x_adv)) beside CE(F(x), y) (published: 6).",
                                 at_least=0.0)
    trades_steps: int = setting(10, "PGD iterations on the KL term (published: 10).", at_least=1)
    trades_norm: str = setting("2", "the ball: L2 (this project's threat model, default eps 0.5) or L-inf (the "
                               "paper's CIFAR-10 setting, default eps 8/255).", choices=NORMS)

    @property
    def norm(self) -> str:
        return self.trades_norm


DEFENSES = (TRADESSettings,)
