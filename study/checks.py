"""What a study refuses before anything starts, each in one line (``SpecError``, exit 2): runs the
spec plans that every job would fail on, a dataset folder that is not one, a root that cannot be
one, runs under the root trained with other settings than the spec's, and a plan of absurd length.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from study.spec import Spec, SpecError
from training import rundir
from training.config import DefenseConfig, RunConfig, TrainConfig


# Most epochs a spec may ask for: more is a typo (10**12), not a plan; a run of this many already
# takes years on the fastest hardware this project knows.
MAX_EPOCHS = 100_000


def check_runs(spec: Spec) -> None:
    """Every run the spec plans, with the settings it would train with, checked as training checks
    them (and what training would only find out in every job: an epoch count that is no plan, a seed
    numpy refuses, a zero radius, a batch larger than the training subset)."""
    where = spec.path
    for seed in spec.seeds + ((spec.source_seed,) if spec.source_seed is not None else ()):
        if not 0 <= seed < 2 ** 32:
            raise SpecError(f"{where}: seed {seed} is outside [0, 2**32): give seeds numpy's generators take")
    for run in spec.runs(Path(".")):
        configs = spec.configs(run)
        train, what = configs["train"], f"run {run.name}"
        if not 1 <= train["epochs"] <= MAX_EPOCHS:
            raise SpecError(f"{where}: training.epochs must be in [1, {MAX_EPOCHS}], got {train['epochs']}")
        limit = configs["data"]["train_limit"]
        if limit and train["batch_size"] > limit:
            raise SpecError(f"{where}: {what}: batch_size {train['batch_size']} is larger than its training subset "
                            f"(train_limit {limit}): lower batch_size or raise train_limit")
        defense = DefenseConfig(**configs["defense"])
        if defense.defense != "none" and defense.resolved().eps <= 0:
            raise SpecError(f"{where}: {what}: eps must be > 0 for defense {defense.defense} (0 trains against no "
                            f"perturbation: use defense \"none\" for clean training)")
        try:
            TrainConfig(**train).validate()
            defense.validate()
            RunConfig(**configs["run"]).validate()
        except ValueError as err:
            raise SpecError(f"{where}: {what}: {str(err).replace('--', '')}") from None


def check_dataset(spec: Spec) -> None:
    """An image folder (``folder:PATH``) that is missing or not laid out as one, or a NumPy archive
    (``npz:PATH``) that is not a file, refused before anything starts (reading a tfds dataset is the
    jobs' work: it may download; an archive's arrays are checked when a job loads it)."""
    if spec.dataset.startswith("npz:"):
        path = Path(spec.dataset.split(":", 1)[1]).expanduser()
        if not path.is_file():
            raise SpecError(f"the dataset archive {path} ({spec.dataset}) is not a file: give --dataset npz:PATH of "
                            f"a .npz with x_train, y_train, x_test, y_test")
        return
    if not spec.dataset.startswith("folder:"):
        return
    root = Path(spec.dataset.split(":", 1)[1]).expanduser()
    if not root.is_dir():
        raise SpecError(f"the dataset folder {root} ({spec.dataset}) does not exist: give --dataset folder:PATH of "
                        f"a folder with train/ and test/ subfolders, one folder per class in each")
    missing = [split for split in ("train", "test") if not (root / split).is_dir()]
    if missing:
        raise SpecError(f"the dataset folder {root} has no {' and no '.join(f'{m}/' for m in missing)} subfolder: "
                        f"lay it out as train/<class>/*.jpg and test/<class>/*.jpg")
    empty = [split for split in ("train", "test") if not any(p.is_dir() for p in (root / split).iterdir())]
    if empty:
        raise SpecError(f"the dataset folder {root}/{empty[0]}/ holds no class folders: lay it out as "
                        f"{empty[0]}/<class>/*.jpg")


def check_root(root: Path) -> None:
    """``--root`` must be a folder this process can write, or a path one can be made at."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == root and not root.is_dir():
        raise SpecError(f"--root {root} is a file, not a directory: give the folder the study's runs live in")
    if not existing.is_dir():
        raise SpecError(f"--root {root} cannot be made: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"--root {root} cannot be written ({existing} is not writable by this user): choose a "
                        f"writable place")


# Settings a run may be recorded with and still be the spec's: where the data is read from (the same
# images under another path), and the epoch count (a lengthened run resumes; a shortened one finished).
_NOT_COMPARED = ("data.dataset", "data.data_dir", "data.cache_dir", *rundir.RESUMABLE_CHANGES)


def check_recorded(spec: Spec, root: Path, runs) -> None:
    """A run under ``root`` recorded with other settings than the spec gives it (the spec edited after
    it trained) is never reused without a word: refused, naming the runs and the settings."""
    import data
    found = []
    for run in runs:
        try:
            stored = json.loads((run.planned.run_dir / rundir.CONFIG_FILE).read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # none yet, or unreadable: training says so for its own run
        configs = spec.configs(run)
        groups = dict(data=data.DataConfig(**configs["data"]), train=TrainConfig(**configs["train"]),
                      defense=DefenseConfig(**configs["defense"]).resolved())
        settings = rundir.flatten_settings(**groups)
        recorded = rundir.with_defaults(stored, rundir.setting_defaults(**groups))
        differ = [f"{k} {recorded.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(recorded) | set(settings))
                  if k not in _NOT_COMPARED and json.dumps(recorded.get(k)) != json.dumps(settings.get(k))]
        if differ:
            found.append((run.name, differ))
    if found:
        (name, differ), more = found[0], len(found) - 1
        raise SpecError(f"{spec.path}: {name} under {root} was trained with other settings than the spec gives it "
                        f"({'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''})"
                        + (f", and {more} other run(s) too" if more else "")
                        + f": give a new --root for the new settings, or move those runs out of {root} to train "
                        f"them again")


# More planned training than this is a mistake (an epoch count off by powers of ten), not a plan.
MAX_PLANNED_HOURS = 24 * 365.0


def planned_hours(spec: Spec, root: Path, runs) -> tuple[float, int]:
    """(the training hours ``runs`` still need at the step rates of runs under ``root`` that train as
    they would, how many have no such run to go by); refuses more than MAX_PLANNED_HOURS."""
    import data
    from study.sweep import estimate
    hours, unknown = 0.0, 0
    for run in runs:
        configs = spec.configs(run)
        _, _, left = estimate(root, run.planned, run.arm.sweep.name if run.arm else None,
                              data.DataConfig(**configs["data"]), TrainConfig(**configs["train"]),
                              DefenseConfig(**configs["defense"]), run.stop_at_benign)
        unknown += left is None
        hours += left or 0.0
        if hours > MAX_PLANNED_HOURS:
            raise SpecError(f"{spec.path}: the runs to train need about {hours:,.0f} h at the step rates of the "
                            f"runs under {root} (more than {MAX_PLANNED_HOURS:,.0f} h): check training.epochs "
                            f"({configs['train']['epochs']}) and the arms' sweeps")
    return hours, unknown
