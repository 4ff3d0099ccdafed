"""Registry of defenses: ``--defense NAME`` -> the class that trains it."""
from __future__ import annotations

from training.defenses.base import Defense
from training.defenses.clean import CleanTraining
from training.defenses.gradient_attacks import FGMTraining, PGDTraining
from training.defenses.l2l import L2LTraining
from training.defenses.pgn import PGNTraining
from training.defenses.rvs import RvSTraining

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (CleanTraining, FGMTraining, PGDTraining, PGNTraining, L2LTraining, RvSTraining)
}


def make_defense(classifier, cfg, train, rng) -> Defense:
    if cfg.defense not in DEFENSES:
        raise ValueError(f"unknown --defense '{cfg.defense}': choose one of {', '.join(DEFENSES)}")
    return DEFENSES[cfg.defense](classifier, cfg, train, rng)


__all__ = ["DEFENSES", "Defense", "make_defense"]
