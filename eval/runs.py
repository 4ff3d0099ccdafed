"""A trained run as evaluation sees it: its settings, its averaged classifier, its training time."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py
import keras

import data
from models import build_classifier
from training.rundir import (CONFIG_FILE, EMA_WEIGHTS_FILE, EPOCHS_DIR, RunDirError, epoch_weights_name, read_config,
                             recorded_settings, seconds_per_epoch)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    config: dict
    epoch: int | None = None     # a kept epoch's EMA classifier (--keep_checkpoints); None: the latest

    @property
    def name(self) -> str:
        return self.run_dir.name if self.epoch is None else f"{self.run_dir.name}@epoch{self.epoch}"

    @property
    def settings(self) -> dict:
        """As recorded, with today's defaults for the settings the run predates."""
        return recorded_settings(self.config["settings"])

    @property
    def defense(self) -> str:
        return self.settings["defense.defense"]

    @property
    def weights_path(self) -> Path:
        if self.epoch is None:
            return self.run_dir / EMA_WEIGHTS_FILE
        return self.run_dir / EPOCHS_DIR / epoch_weights_name(self.epoch)

    def data_config(self, test_limit: int, cache_dir: str | None = None) -> data.DataConfig:
        """The run's dataset, with the evaluation's own test subset (0 = the whole test split) and
        decoded-image cache folder (None: the default)."""
        fields = {f.name: self.settings[f"data.{f.name}"] for f in dataclasses.fields(data.DataConfig)}
        # The dataset as loaded (an image folder's absolute path), not as typed: runs made from
        # another working directory with a relative folder path stay evaluable.
        fields["dataset"] = self.config["dataset"]["name"]
        return data.DataConfig(**{**fields, "test_limit": test_limit}, cache_dir=cache_dir)

    def build_classifier(self) -> keras.Model:
        """The EMA classifier in float32, whatever the run trained in: float16 gradients vanish for
        confident models and would overstate robustness (docs/methods.md section 5)."""
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            info = self.config["dataset"]
            model = build_classifier(info["num_classes"], tuple(info["image_shape"]), self.settings["train.width"])
        finally:
            keras.mixed_precision.set_global_policy(previous)
        try:
            model.load_weights(str(self.weights_path))
        except (OSError, ValueError, KeyError) as err:
            raise RunDirError(f"{self.weights_path} does not hold this run's classifier ({type(err).__name__}): "
                              f"{_WEIGHTS_FIX}") from None
        return model

    def fingerprint(self) -> str:
        """Changes whenever the evaluated weights change: part of every cached result's key."""
        return hashlib.sha1(self.weights_path.read_bytes()).hexdigest()[:16]

    def seconds_per_epoch(self) -> float | None:
        """An epoch's training steps at the run's median step rate (the table's last column;
        training.rundir.seconds_per_epoch)."""
        return seconds_per_epoch(self.run_dir, int(self.settings["train.batch_size"]),
                                 self.config.get("dataset", {}).get("train_size"))


def load_run(run_dir: str | Path, epoch: int | None = None) -> TrainedRun:
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE}): pass the --run_dir of a training run")
    if not (run_dir / EMA_WEIGHTS_FILE).exists():
        raise RunDirError(f"{run_dir} has no trained weights yet ({EMA_WEIGHTS_FILE} is written at the end of "
                          f"each epoch): train it first, or resume it with the same --run_dir")
    config = read_config(config_path, "pass the --run_dir of a training run made by this tool",
                         required=("settings", "dataset"))
    run = TrainedRun(run_dir, config, epoch)
    if not run.weights_path.exists():
        raise RunDirError(f"{run_dir} kept no weights for epoch {epoch} (see its {EPOCHS_DIR}/): train it with "
                          f"--keep_checkpoints all, or choose a kept epoch")
    _check_readable(run.weights_path)
    return run


_WEIGHTS_FIX = "restore the file from a copy, or train the run again (--overwrite moves the old one aside)"


def _check_readable(weights_path: Path) -> None:
    """A truncated or corrupt weights file fails here, before any data is read or attack run,
    instead of as h5py's 'Unable to synchronously open file' traceback."""
    try:
        with h5py.File(weights_path, "r"):
            pass
    except OSError:
        raise RunDirError(f"{weights_path} is truncated or corrupt (not a readable HDF5 file): "
                          f"{_WEIGHTS_FIX}") from None
