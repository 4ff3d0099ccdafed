"""The run directory: what a run records about itself, and the rules for reusing one.

``config.json`` holds every setting, the dataset, package versions and the git commit. A run
started again in the same directory resumes it, but only with the same settings (the length of
the run and the logging cadence may change); anything else is refused rather than mixed into
the old run. ``--overwrite`` moves the old directory aside, it never deletes it.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from training import host, writes
from training.lock import LOCK_FILE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EMA_WEIGHTS_FILE = "ema_classifier.weights.h5"
CHECKPOINTS_DIR = "checkpoints"
EPOCHS_DIR = "epochs"  # <run_dir>/epochs/epoch-NNN.weights.h5: kept EMA classifiers (--keep_checkpoints)
TENSORBOARD_DIR = "tensorboard"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
GIT_STATE_FILE = "git_state.json"  # in a copy of the code without .git: the commit it was copied at
# Settings that may change between the parts of one run without changing what it learns.
RESUMABLE_CHANGES = frozenset({"train.epochs"})
PACKAGES = ("tensorflow", "keras", "cleverhans", "tensorflow-datasets", "numpy", "absl-py")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message is one line with the fix."""


def epoch_weights_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}.weights.h5"


EPOCH_WEIGHTS_PATTERN = re.compile(r"epoch-(\d+)\.weights\.h5$")  # epoch_weights_name's files


def default_run_dir(dataset: str, defense_name: str, width: float, seed: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split(":", 1)[-1].rstrip("/").split("/")[-1])
    return str(Path("runs") / f"{slug}-{defense_name}-w{width:g}-seed{seed}")


def flatten_settings(**groups) -> dict:
    """{"train": TrainConfig(...), ...} -> {"train.lr": 0.0005, ...}: the comparable settings (a
    config with ``as_dict``, the DefenseConfig, gives its own: its defense's settings only)."""
    flat = {}
    for group, cfg in groups.items():
        values = cfg.as_dict() if hasattr(cfg, "as_dict") else dataclasses.asdict(cfg)
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    return flat


def setting_defaults(**groups) -> dict:
    """The defaults of ``flatten_settings``' keys, for the settings that have one (config classes
    or instances; a DefenseConfig instance gives its defense's)."""
    defaults = {}
    for group, cfg in groups.items():
        if hasattr(cfg, "setting_defaults") and not isinstance(cfg, type):
            defaults.update({f"{group}.{key}": value for key, value in cfg.setting_defaults().items()})
            continue
        defaults.update({f"{group}.{field.name}": field.default for field in dataclasses.fields(cfg)
                         if field.default is not dataclasses.MISSING})
    return defaults


def with_defaults(stored: dict, defaults: dict) -> dict:
    """A run's recorded settings in today's names, plus the current default of each setting it
    does not record, less the defense settings that are not the run's defense's.

    Such a setting was added to the code after the run was made, and a new setting's default keeps
    the old behaviour, so the default is what the run used. Runs made before each defense declared
    its own settings recorded every defense's (``defense.c_l`` for an FGM run): ``defaults`` holds
    the run's defense's keys, and the others, which never changed what it learned, are dropped."""
    settings = {**defaults, **migrate_settings(stored)}
    if not any(k.startswith("defense.") for k in defaults):  # no defense defaults given: keep them all
        return settings
    return {k: v for k, v in settings.items() if not k.startswith("defense.") or k in defaults}


def recorded_settings(stored: dict) -> dict:
    """A run's config.json "settings" as today's code names and fills them (``with_defaults``): what
    evaluation, reports and sweeps compare. Reads no TensorFlow-dependent module but ``data``."""
    from training.config import DefenseConfig  # imported here so that rundir itself stays import-light

    return with_defaults(stored, _defaults_for(migrate_settings(stored).get("defense.defense", DefenseConfig.defense)))


def default_settings(defense: str) -> dict:
    """{setting: today's default} of a ``defense`` run, keyed as config.json's "settings" are."""
    return dict(_defaults_for(defense))


@functools.lru_cache(maxsize=None)
def _defaults_for(defense: str) -> dict:
    """Today's defaults of a ``defense`` run's settings, computed once per defense: every read of a
    run's settings fills from them (callers must not change the dict)."""
    import data  # DataConfig's defaults
    from training.config import DefenseConfig, TrainConfig
    return setting_defaults(data=data.DataConfig, train=TrainConfig, defense=DefenseConfig(defense))


def migrate_settings(stored: dict) -> dict:
    """Settings recorded under names this tool no longer uses, renamed to what replaced them:
    ``train.mixed_precision`` (a boolean for mixed_float16) became ``train.precision``."""
    settings = dict(stored)
    if "train.mixed_precision" in settings:
        mixed = settings.pop("train.mixed_precision")
        settings.setdefault("train.precision", "mixed_float16" if mixed else "float32")
    return settings


def check_run_dir(run_dir: Path, settings: dict, overwrite: bool, defaults: dict | None = None) -> bool:
    """Returns True when ``run_dir`` holds this run (resume), False when it is new or replaced.

    ``defaults`` fill in the settings a run predates (``with_defaults``). Reads only: nothing is
    written until the caller knows the whole run can start.
    """
    config_path = run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run_dir {run_dir} is a file, not a directory: choose another --run_dir")
    if not run_dir.exists() or overwrite:
        return False
    if not config_path.exists():
        if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            raise RunDirError(f"--run_dir {run_dir} exists and is not a run directory (no {CONFIG_FILE}): "
                              f"choose another --run_dir, or --overwrite to move it aside")
        return False
    stored = with_defaults(read_config(config_path, "choose another --run_dir, or --overwrite to move it aside")
                           ["settings"], defaults or {})
    differences = [
        f"{key} {stored.get(key)!r} -> {settings.get(key)!r}"
        for key in sorted(set(stored) | set(settings))
        if key not in RESUMABLE_CHANGES and stored.get(key) != settings.get(key)
    ]
    if differences:
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        raise RunDirError(f"--run_dir {run_dir} holds a run with different settings ({shown}): "
                          f"choose another --run_dir, or --overwrite to move the old run aside")
    return True


def read_config(config_path: Path, fix: str, required: tuple[str, ...] = ("settings",)) -> dict:
    """A run's config.json, or a RunDirError saying what is wrong with it and ``fix``: a file cut
    short (a full disk, a copy interrupted) is not valid JSON; valid JSON without this tool's
    fields was not written by it."""
    try:
        config = json.loads(config_path.read_text())
    except OSError as err:
        raise RunDirError(f"{config_path} cannot be read ({type(err).__name__}): {fix}") from None
    except ValueError:
        raise RunDirError(f"{config_path} is not valid JSON (truncated or damaged): {fix}") from None
    missing = [key for key in required if not isinstance(config, dict) or key not in config]
    if missing:
        raise RunDirError(f"{config_path} has no '{missing[0]}': it was not written by this tool; {fix}")
    return config


def check_writable(run_dir: Path, resuming: bool) -> None:
    """Raises a RunDirError unless training can write everything it will write: the run directory
    (or, for a new one, the nearest existing folder above it), its sub-folders and the log it
    appends to. Probed by writing, so read-only mounts, ACLs and immutable files are caught too."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        parent = run_dir.absolute().parent
        while not parent.exists():
            parent = parent.parent
        _probe_folder(parent, f"--run_dir {run_dir} cannot be created")
        return
    folders = [run_dir] + [run_dir / name for name in (CHECKPOINTS_DIR, EPOCHS_DIR, TENSORBOARD_DIR)
                           if (run_dir / name).is_dir()]
    for folder in folders:
        _probe_folder(folder, f"--run_dir {run_dir} is not writable" if resuming else
                      f"--run_dir {run_dir} cannot be used")
    metrics = run_dir / METRICS_FILE
    if metrics.exists():
        try:
            with open(metrics, "a", encoding="utf-8"):
                pass
        except OSError as err:
            raise RunDirError(f"--run_dir {run_dir} is not writable ({metrics.name}: {err.strerror}): fix its "
                              f"permissions, or copy the run to a writable place and give that --run_dir") from None


def _probe_folder(folder: Path, problem: str) -> None:
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise RunDirError(f"{problem}: {folder} is not writable ({err.strerror}); fix its permissions or "
                          f"choose a --run_dir on a writable file system") from None


def metrics_records(run_dir: Path) -> list[dict]:
    """Every complete record of a run's metrics.jsonl, in order (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict]:
    """The records of a run's metrics.jsonl (those of ``kind`` if given), each (kind, step) once.

    A run killed after logging but before its next checkpoint logged steps that the resumed run
    trains and logs again (``drop_metrics_after`` removes them when it resumes); this reader keeps
    the last record of each step for what a log written before that fix holds twice. ``start``
    events are kept as they are (one per part of the run)."""
    records = metrics_records(run_dir)
    last = {}
    for i, record in enumerate(records):
        if record.get("kind") != "start":
            last[record.get("kind"), record.get("step")] = i
    kept = [r for i, r in enumerate(records)
            if r.get("kind") == "start" or last[r.get("kind"), r.get("step")] == i]
    return [r for r in kept if kind is None or r.get("kind") == kind]


def finished_event(run_dir: Path, epochs: int) -> dict | None:
    """The log's record that the run finished ``epochs`` epochs (a run lengthened later has not):
    the one of a run trained to its end if there is one, else that of a run finished early by
    --stop_at_benign ({"early": True, "epoch", "test_acc", "stop_at_benign"}); None if neither."""
    events = [e for e in read_metrics(run_dir, "finished") if e.get("epochs") == epochs]
    full = [e for e in events if not e.get("early")]
    return (full or events or [None])[-1]


def is_finished(run_dir: Path, epochs: int, stop_at_benign: float = 0.0) -> bool:
    """Whether the run needs no more training: trained to its end, or (``stop_at_benign`` > 0)
    finished early at a benign accuracy that reaches ``stop_at_benign``. A run finished early is
    not finished for a sweep that trains to the end: it resumes."""
    event = finished_event(run_dir, epochs)
    if event is None:
        return False
    return not event.get("early") or (stop_at_benign > 0 and event["test_acc"] >= stop_at_benign)


def seconds_per_epoch(run_dir: Path, batch_size: int, train_size: int | None) -> float | None:
    """An epoch's training steps at the run's median step rate: the epoch's examples over the
    median examples/s of training's logging windows (every --log_every_steps steps; a window starts
    after the step that compiled). The per-epoch evaluation, the compiling step and whatever stalls
    an epoch's end fall in a few windows, which the median leaves out. Logs without windows: the
    median epoch time, epochs that compiled the step or were resumed part-way left out unless no
    other was logged. None: nothing logged yet."""
    rates = [r["examples_per_second"] for r in read_metrics(run_dir, "train") if r.get("examples_per_second")]
    if rates and train_size:
        return (train_size // batch_size) * batch_size / statistics.median(rates)
    records = read_metrics(run_dir, "epoch_record")
    whole = [r["seconds_per_epoch"] for r in records
             if not r.get("partial", False) and not r.get("includes_tracing", r.get("epoch") == 1)]
    times = whole or [r["seconds_per_epoch"] for r in records]
    return statistics.median(times) if times else None


def drop_metrics_after(run_dir: Path, step: int) -> None:
    """Rewrites metrics.jsonl (atomically) without the records past ``step``, without the ``start``
    record of an earlier part that began at ``step`` (the part about to start logs its own) and
    without a line cut short by a kill: what a resumed run is about to train and log again."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    records = metrics_records(run_dir)
    kept = [r for r in records if int(r.get("step", 0)) < step
            or int(r.get("step", 0)) == step and r.get("kind") != "start"]
    if len(kept) == len(path.read_text(encoding="utf-8").splitlines()):
        return
    writes.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept), path.name)


def record_resumed_settings(run_dir: Path, settings: dict) -> dict:
    """A run resumed with another value of a RESUMABLE_CHANGES setting (--epochs) records the new
    value in its config.json, and the change under "changes", so that its config says what the run
    now is (the sweep and the report judge "finished" by it). Returns {setting: [old, new]}."""
    path = run_dir / CONFIG_FILE
    config = read_config(path, "train it again with --overwrite")
    changed = {k: [config["settings"].get(k), settings[k]] for k in sorted(RESUMABLE_CHANGES)
               if k in settings and config["settings"].get(k) != settings[k]}
    if changed:
        config["settings"].update({k: new for k, (_, new) in changed.items()})
        config.setdefault("changes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **changed})
        write_json_atomic(path, config)
    return changed


def create_run_dir(run_dir: Path, record: dict, overwrite: bool) -> Path | None:
    """Creates ``run_dir`` with its config.json; an existing one is renamed when overwriting.

    Returns where the old directory went, if anywhere.
    """
    holds_a_run = run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir())
    moved_to = move_aside(run_dir) if overwrite and holds_a_run else None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG_FILE, record)
    return moved_to


def move_aside(path: Path) -> Path:
    """Renames ``path`` to ``<name>.replaced-<time>`` beside it (never deletes); returns the new path."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    moved_to = path.with_name(f"{path.name}.replaced-{stamp}")
    for n in range(2, 1000):
        if not moved_to.exists():
            break
        moved_to = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    path.rename(moved_to)
    return moved_to


def run_record(flags: dict, settings: dict, dataset_info: dict) -> dict:
    """Everything needed to reproduce a run: flags, settings, dataset, versions, commit, host."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flags": flags,
        "settings": settings,
        "dataset": dataset_info,
        "versions": package_versions(),
        "git": git_state(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "cpus": os.cpu_count(), "cpu_model": host.cpu_model(), "gpus": host.gpu_names()},
    }


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict:
    """{"commit", "dirty"} of the code running: the checkout's, or, in a copy of the code without
    one (a Ray task's working directory), what the copy recorded of the checkout it came from."""
    def git(*args):
        result = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=10)
        return result.stdout.strip() if result.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        commit = status = None
    if commit is None and (PROJECT_ROOT / GIT_STATE_FILE).exists():
        return json.loads((PROJECT_ROOT / GIT_STATE_FILE).read_text())
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_json_atomic(path: Path, obj) -> None:
    """Strict JSON (an undefined number is null, never NaN or Infinity, which other tools'
    parsers reject), written to a temporary file and renamed, so a reader never sees half of it;
    a failed write (a full disk) is a one-line WriteFailed and leaves no temporary file."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    writes.atomic_write_text(Path(path), text, Path(path).name)


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None (recursively through dicts, lists, tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj
