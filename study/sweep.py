"""``run.py --mode sweep``: one training run per (swept value, seed) under a common root.

    python run.py --mode sweep --defense fgm --sweep eps=0.1,0.3,1.0 --seeds 0,1,2 --root runs/study

Each run lives in ``<root>/<defense>-<name><value>-seed<seed>`` (``<root>/<defense>-seed<seed>``
without ``--sweep``) with its own config.json, so it is an ordinary run: ``--mode eval`` takes it,
and the report (``--mode report --root``) finds it. A run that has finished is skipped, one that
stopped part-way is resumed from its checkpoint, and the rest start; stopping a sweep and giving
the same command again therefore trains only what is missing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from training import rundir
from training.config import DefenseConfig, TrainConfig

from training.defenses import NAMES

# Training settings a sweep may vary: all but the seed (which --seeds varies). Of the defense's, any
# it declares (DefenseConfig.setting_names), the shared ones included.
_TRAIN_SWEEPABLE = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed")


def sweepable(defense: str | None = None) -> tuple[str, ...]:
    """The settings a sweep of ``defense`` may vary (None: of any defense)."""
    names = NAMES if defense is None else (defense,)
    own = dict.fromkeys(n for d in names for n in DefenseConfig.setting_names(d))
    return _TRAIN_SWEEPABLE + tuple(own)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str | None                 # the swept setting, None for seeds only
    values: tuple                    # its values (parsed to the setting's type); (None,) without one

    @classmethod
    def parse(cls, spec: str, defense: str | None = None) -> "Sweep":
        """``"eps=0.1,0.3"`` -> Sweep("eps", (0.1, 0.3)); ``""`` -> a sweep over seeds only.
        ``defense``: the setting must be one of that defense's (None: of any defense)."""
        if not spec:
            return cls(None, (None,))
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ValueError(f"--sweep takes NAME=V1,V2,... (e.g. eps=0.1,0.3), got '{spec}'")
        if name not in sweepable(defense):
            which = f"--defense {defense}'s settings" if defense else "a defense's settings"
            raise ValueError(f"--sweep cannot vary '{name}': choose a training setting (lr, width, ...) or one of "
                             f"{which} ({', '.join(n for n in sweepable(defense) if n not in _TRAIN_SWEEPABLE)})")
        kind = _field_type(name, defense)
        try:
            parsed = tuple(kind(v.strip()) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--sweep {name} takes {kind.__name__} values, got '{values}'") from None
        if any(isinstance(v, float) and not math.isfinite(v) for v in parsed):
            raise ValueError(f"--sweep {name} takes finite numbers, got '{values}'")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--sweep {name} lists a value twice: '{values}'")
        return cls(name, parsed)


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run_dir: Path
    value: object
    seed: int


def plan(root: Path, defense: str, sweep: Sweep, seeds: tuple[int, ...], variant: dict | None = None
         ) -> list[PlannedRun]:
    """One run per (value, seed), named ``<defense>[-<variant>][-<name><value>]-seed<seed>``: a
    variant (the defense's categorical settings away from their defaults, DefenseConfig.variant)
    is part of the name, so that ``--pgn_grad_scale unit`` runs share a root with the paper's."""
    shown = "".join(f"-{k}{_shown(v)}" for k, v in sorted((variant or {}).items()) if k != sweep.name)
    return [PlannedRun(Path(root) / _label(defense + shown, sweep.name, value, seed), value, seed)
            for value in sweep.values for seed in seeds]


def _label(defense: str, name: str | None, value, seed: int) -> str:
    if name is None:
        return f"{defense}-seed{seed}"
    return f"{defense}-{name}{_shown(value)}-seed{seed}"


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


is_finished = rundir.is_finished


def progress(run_dir: Path, epochs: int, stop_at_benign: float = 0.0) -> dict:
    """How far a run has got: {"state": "finished" | "partial" (it has a checkpoint to resume
    from) | "not started", "epochs_done" (whole epochs logged), "step" (the latest checkpoint's:
    where a resumed run goes on; None without one), "epochs_left" (fractional)}."""
    if is_finished(run_dir, epochs, stop_at_benign):
        return {"state": "finished", "epochs_done": epochs, "step": None, "epochs_left": 0.0}
    saved = [int(m.group(1)) for p in (run_dir / rundir.CHECKPOINTS_DIR).glob("ckpt-*.index")
             if (m := re.fullmatch(r"ckpt-(\d+)\.index", p.name))]
    try:
        config = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
    except (OSError, ValueError):
        config = None
    if not saved or config is None:
        return {"state": "not started", "epochs_done": 0, "step": None, "epochs_left": float(epochs)}
    step = max(saved)  # the loop numbers its checkpoints by step
    done = max((r.get("epoch", 0) for r in rundir.read_metrics(run_dir, "epoch_record") if r["step"] <= step),
               default=0)
    train_size = config.get("dataset", {}).get("train_size")
    batch = rundir.recorded_settings(config.get("settings", {})).get("train.batch_size")
    left = epochs - (step / (train_size // batch) if train_size and batch else done)
    return {"state": "partial", "epochs_done": done, "step": step, "epochs_left": max(left, 0.0)}


def _like(root: Path, planned: PlannedRun, settings: dict, swept: str | None) -> tuple[Path, float] | None:
    """A run under ``root`` that trains as ``planned`` would, and its seconds an epoch: the planned
    run itself when it has a log, else one that differs only in the seed (best) or also in the swept
    value (``swept``: its setting's key). None when no such run has logged a step rate yet."""
    others = sorted(p for p in root.iterdir() if p != planned.run_dir) if root.is_dir() else []
    candidates = []  # (run_dir, its config, its settings as today's code names them), each read once
    for run_dir in [planned.run_dir] + others:
        try:
            config = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
            candidates.append((run_dir, config, rundir.recorded_settings(config["settings"])))
        except (OSError, ValueError, KeyError):
            continue
    ignored = {"train.seed", "train.epochs"}
    for differing in (set(), {swept} if swept else set()):
        for run_dir, config, recorded in candidates:
            keys = (set(recorded) | set(settings)) - ignored - differing
            if all(json.dumps(recorded.get(k)) == json.dumps(settings.get(k)) for k in keys):
                seconds = rundir.seconds_per_epoch(run_dir, int(recorded["train.batch_size"]),
                                                   config.get("dataset", {}).get("train_size"))
                if seconds:
                    return run_dir, seconds
    return None


def dry_run(root: str, sweep: Sweep, seeds: tuple[int, ...], data_cfg, train_cfg: TrainConfig,
            defense_cfg: DefenseConfig, say=print, stop_at_benign: float = 0.0) -> dict[str, str]:
    """What ``run_sweep`` would do, without training: each planned run's state and the training time
    it has left, estimated from the step rate of a run under ``root`` that trains as it would (or
    "no estimate"; with ``stop_at_benign``, the time to the last epoch: an upper bound); returns
    {run_dir: "finished" | "partial" | "not started"}."""
    _check(root, sweep, seeds, defense_cfg)
    status, left, unknown = {}, 0.0, 0
    planned = plan(Path(root), defense_cfg.defense, sweep, seeds, defense_cfg.variant())
    for i, planned_run in enumerate(planned, 1):
        train_over, defense_over = _overrides(planned_run, sweep)
        run_train = dataclasses.replace(train_cfg, **train_over)
        run_defense = dataclasses.replace(defense_cfg, **defense_over)
        state, text, hours = estimate(Path(root), planned_run, sweep.name, data_cfg, run_train, run_defense,
                                      stop_at_benign)
        status[str(planned_run.run_dir)] = state
        say(f"[{i}/{len(planned)}] {planned_run.run_dir}: {text}")
        if hours is None and state != "finished":
            unknown += 1
        left += hours or 0.0
    say(f"dry run: {sum(s != 'finished' for s in status.values())} of {len(status)} run(s) to train, about "
        f"{left:.2f} h" + (f" and {unknown} without an estimate" if unknown else "") + " (epochs at their step rate, "
        f"without the per-epoch evaluation)")
    return status


def estimate(root: Path, planned_run: PlannedRun, swept: str | None, data_cfg, run_train: TrainConfig,
             run_defense: DefenseConfig, stop_at_benign: float = 0.0) -> tuple[str, str, float | None]:
    """(state, what to say after the run's name, training hours left or None without an estimate)
    of one planned run: see ``dry_run``."""
    done = progress(planned_run.run_dir, run_train.epochs, stop_at_benign)
    line = done["state"]
    if done["state"] == "finished":
        return done["state"], line, 0.0
    if done["state"] == "partial":
        line += f" ({done['epochs_done']} of {run_train.epochs} epochs done, checkpoint at step {done['step']})"
    settings = rundir.flatten_settings(data=data_cfg, train=run_train, defense=run_defense.resolved())
    key = None if swept is None else next(k for k in settings if k.split(".", 1)[1] == swept)
    like = _like(Path(root), planned_run, settings, key)
    if like is None:
        return done["state"], f"{line}; no estimate (no run under the root trains like it yet)", None
    source, seconds = like
    epochs_left, until = done["epochs_left"], ""
    reached = _first_epoch_reaching(source, stop_at_benign) if stop_at_benign else None
    if reached is not None:  # it stops about where the run it is estimated from reached the accuracy
        epochs_left = max(reached - (run_train.epochs - done["epochs_left"]), 0.0)
        until = f", to epoch {reached}, where {source.name} reached benign accuracy {stop_at_benign:g}"
    hours = epochs_left * seconds / 3600
    return done["state"], (f"{line}; about {hours:.2f} h of training left at {seconds:.1f} s an epoch"
                           + ("" if source == planned_run.run_dir else f" (as {source.name})") + until), hours


def _first_epoch_reaching(run_dir: Path, accuracy: float) -> int | None:
    """The first epoch whose recorded benign accuracy reaches ``accuracy`` (None: none did)."""
    return next((r["epoch"] for r in sorted(rundir.read_metrics(run_dir, "epoch_record"), key=lambda r: r["epoch"])
                 if r["test_acc"] >= accuracy), None)


def _check(root: str, sweep: Sweep, seeds: tuple[int, ...], defense_cfg: DefenseConfig) -> None:
    if not root:
        raise ValueError("--mode sweep needs --root DIR, the directory that holds the sweep's runs")
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    if sweep.name is not None and sweep.name not in sweepable(defense_cfg.defense):
        raise ValueError(f"--sweep {sweep.name}: not a setting of --defense {defense_cfg.defense}")


def _overrides(planned_run: PlannedRun, sweep: Sweep) -> tuple[dict, dict]:
    """The planned run's seed and swept value, as (TrainConfig, DefenseConfig) field overrides."""
    train_over, defense_over = {"seed": planned_run.seed}, {}
    if sweep.name is not None:
        target = train_over if sweep.name in {f.name for f in dataclasses.fields(TrainConfig)} else defense_over
        target[sweep.name] = planned_run.value
    return train_over, defense_over


def run_sweep(root: str, sweep: Sweep, seeds: tuple[int, ...], data_cfg, train_cfg: TrainConfig,
              defense_cfg: DefenseConfig, run_cfg, flags: dict | None = None, say=print) -> dict[str, str]:
    """Trains what is missing of the sweep; returns {run_dir: "skipped" | "resumed" | "trained" |
    "stopped" | "failed: <why>"}. A run whose loss diverges is reported and the sweep goes on."""
    import keras  # the sweep's planning above works without TensorFlow
    from training.loop import TrainingError, train

    _check(root, sweep, seeds, defense_cfg)
    status = {}
    planned = plan(Path(root), defense_cfg.defense, sweep, seeds, defense_cfg.variant())
    for i, planned_run in enumerate(planned, 1):
        train_over, defense_over = _overrides(planned_run, sweep)
        run_train = dataclasses.replace(train_cfg, **train_over)
        run_defense = dataclasses.replace(defense_cfg, **defense_over)
        run_run = dataclasses.replace(run_cfg, run_dir=str(planned_run.run_dir))
        header = f"[{i}/{len(planned)}] {planned_run.run_dir}"
        if is_finished(planned_run.run_dir, run_train.epochs, run_cfg.stop_at_benign):
            say(f"{header}: finished, skipped")
            status[str(planned_run.run_dir)] = "skipped"
            continue
        resuming = (planned_run.run_dir / rundir.CHECKPOINTS_DIR).exists()
        say(f"{header}: {'resuming' if resuming else 'training'}")
        run_flags = {**(flags or {}), **train_over, **defense_over, "run_dir": str(planned_run.run_dir)}
        keras.backend.clear_session()  # one process trains every run: no graph state carried over
        try:
            result = train(data_cfg, run_train, run_defense, run_run, flags=run_flags, say=say)
        except TrainingError as err:
            say(f"{header}: failed: {err}")
            status[str(planned_run.run_dir)] = f"failed: {err}"
            continue
        status[str(planned_run.run_dir)] = ("resumed" if resuming else "trained") if result.finished else "stopped"
        if not result.finished:  # --stop_after_steps: the rest of the sweep waits for the next call
            say(f"{header}: stopped at step {result.step}/{result.total_steps}; the same command resumes the sweep")
            break
    return status


def _field_type(name: str, defense: str | None):
    """The type a swept value parses to: the declared setting's kind, else the training field's."""
    for candidate in (NAMES if defense is None else (defense,)):
        if name in DefenseConfig.setting_names(candidate):
            kind = DefenseConfig.setting_field(candidate, name).metadata["kind"]
            return kind if kind is not bool else _boolean
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return type(field.default) if not isinstance(field.default, bool) else _boolean


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)
