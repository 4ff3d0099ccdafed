"""Benign-accuracy matching: compare defenses at equal benign accuracy (the paper's Table 2).

Training records, per epoch, the benign test accuracy of the EMA classifier (metrics.jsonl) and,
with ``--keep_checkpoints``, keeps that epoch's weights. Matching picks, for each run, the kept
epoch whose recorded accuracy is closest to the target and says how far off it is; a run that
cannot get within the tolerance is reported as unmatched, never silently compared.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from training.rundir import EPOCH_WEIGHTS_PATTERN, EPOCHS_DIR, read_metrics

TARGETS = ("clean", "lowest", "none")


@dataclasses.dataclass(frozen=True)
class Match:
    epoch: int
    accuracy: float          # the training log's benign accuracy at that epoch
    target: float | None     # None: no matching asked (the final epoch)
    tolerance: float

    @property
    def difference(self) -> float:
        return 0.0 if self.target is None else self.accuracy - self.target

    @property
    def within_tolerance(self) -> bool:
        return abs(self.difference) <= self.tolerance + 1e-12


def epoch_records(run_dir: Path) -> dict[int, dict]:
    """{epoch: its end-of-epoch record} from the run's log; a resumed run's repeated epoch keeps its
    last record."""
    return {int(r["epoch"]): r for r in read_metrics(run_dir, "epoch_record")}


def epoch_accuracies(run_dir: Path) -> dict[int, float]:
    """{epoch: benign test accuracy of the EMA weights}, as training recorded it."""
    return {epoch: float(r["test_acc"]) for epoch, r in epoch_records(run_dir).items()}


def kept_epochs(run_dir: Path) -> list[int]:
    """Epochs whose EMA classifier was kept (``--keep_checkpoints``)."""
    folder = Path(run_dir) / EPOCHS_DIR
    if not folder.is_dir():
        return []
    names = (EPOCH_WEIGHTS_PATTERN.fullmatch(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in names if m)


def closest_epoch(accuracies: dict[int, float], candidates: list[int], target: float | None,
                  tolerance: float) -> Match:
    """The candidate epoch whose accuracy is closest to ``target`` (ties: the later epoch, trained
    longer); without a target, the last candidate."""
    usable = [e for e in candidates if e in accuracies]
    if not usable:
        raise ValueError("no kept epoch has a recorded accuracy: train with --keep_checkpoints all (or N)")
    if target is None:
        epoch = max(usable)
    else:
        epoch = min(usable, key=lambda e: (abs(accuracies[e] - target), -e))
    return Match(epoch, accuracies[epoch], target, tolerance)


def parse_target(text: str) -> float | str | None:
    """``0.55`` -> 0.55; ``clean`` / ``lowest`` kept as words; ``none`` -> None."""
    word = text.strip().lower()
    if word == "none":
        return None
    if word in TARGETS:
        return word
    try:
        value = float(word)
    except ValueError:
        raise ValueError(f"--match_benign takes an accuracy in (0, 1], clean, lowest or none, got '{text}'") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"--match_benign takes an accuracy in (0, 1], got {value}")
    return value
