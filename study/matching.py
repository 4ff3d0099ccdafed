"""Benign-accuracy matching: compare defenses at equal benign accuracy (the paper's Table 2).

Training records, per epoch, the benign test accuracy of the EMA classifier (metrics.jsonl) and,
with ``--keep_checkpoints``, keeps that epoch's weights. Matching picks, for each run, the kept
epoch whose recorded accuracy is closest to the target and says how far off it is; a run that
cannot get within the tolerance is reported as unmatched, never silently compared.
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from training.rundir import EPOCH_WEIGHTS_PATTERN, EPOCHS_DIR, RunDirError, read_metrics

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

    def record(self) -> dict:
        """As a Table 2 row records it (report.json's ``match``)."""
        return {"epoch": self.epoch, "recorded_accuracy": self.accuracy, "target": self.target,
                "difference": self.difference, "within_tolerance": self.within_tolerance}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "Match":
        return cls(int(record["epoch"]), float(record["accuracy"]), record["target"], float(record["tolerance"]))


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


def resolve_target(spec, finals: dict[str, list[float]]) -> float | None:
    """The benign accuracy to match, from ``finals`` ({group: its table runs' final accuracies}): a
    number as given; ``clean``: the mean final accuracy of the clean runs; ``lowest``: the lowest
    final accuracy among the table runs (every run reaches it at its end, so matching picks the
    epoch where it did)."""
    if spec is None or isinstance(spec, float):
        return spec
    if spec == "clean":
        if "none" not in finals:
            raise RunDirError("--match_benign clean needs clean runs (--defense none) under --root")
        return statistics.mean(finals["none"])
    return min(min(v) for v in finals.values())


def match_table(table_runs: dict, target: float | None, tolerance: float) -> dict[str, Match]:
    """{run name: its matched epoch} for every table run (``study.plan.StudyRun``s by group): the
    one place a study decides which epoch of a run its Table 2 row attacks. Without kept epochs
    (--keep_checkpoints last) only the final weights can be matched."""
    return {m.run.name: closest_epoch(m.accuracies, m.kept or [max(m.accuracies)], target, tolerance)
            for members in table_runs.values() for m in members}


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
