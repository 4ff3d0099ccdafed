"""Train *your* Keras classifier with any registered defense, from Python; the trained model comes back.

    from training import train_model
    model, record = train_model(model, "pgd", (x_train, y_train), (x_test, y_test), run_dir="runs/mine",
                                epochs=10, eps=0.5, pgd_steps=10)

The run is an ordinary run directory (config.json, metrics.jsonl, TensorBoard, checkpoints, the
averaged weights ``ema_classifier.weights.h5``): the same loop as ``run.py --mode train``
(``training/loop.py``), so the exponential moving average, the checkpoints, the lock and the exact
resume hold: the same call on the same directory goes on where a stopped one ended. ``model`` is a
Keras model mapping images in [0, 1] to logits; it is copied with ``keras.models.clone_model``, not
changed (a subclassed model is copied through its get_config()). What comes back is that copy with
the averaged weights, the ones ``--mode eval`` evaluates. Images follow the same rule as
``eval.evaluate_model`` (data/user_arrays.py): uint8, or float in [0, 1]; the loop keeps them as
uint8, so float images must be multiples of 1/255.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple

import numpy as np


class TrainedModel(NamedTuple):
    """``model``: the trained classifier with the run's averaged (EMA) weights, as evaluation uses
    them (None only for a run that has trained no step yet); ``record``: training.loop.TrainResult
    (run_dir, step, epoch_records, ...). Unpacks as ``model, record = train_model(...)``."""
    model: object
    record: object


def _data(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, int32 labels) from (images, labels) or a tf.data.Dataset of (image, label) pairs or batches."""
    from data.user_arrays import as_uint8, images_and_labels

    if hasattr(data, "as_numpy_iterator"):
        x, y = images_and_labels(data, None, f"{split}_data")
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError(f"{split}_data must be (images, labels) or a tf.data.Dataset of (images, labels) "
                             "batches") from None
        x, y = images_and_labels(x, y, f"{split}_data")
    return as_uint8(x, f"{split}_data"), y.astype(np.int32)


def _trainable_copy(model, image_shape: tuple):
    """``model`` in a form the loop can copy (keras.models.clone_model, for the training copy and the
    EMA's): a subclassed model, which declares no input, is wrapped in a functional model; one that
    cannot be rebuilt from its get_config() is refused here rather than inside Keras's deserializer."""
    import keras

    if getattr(model, "inputs", None):
        return model
    inputs = keras.Input(image_shape)
    wrapped = keras.Model(inputs, model(inputs), name=model.name)
    try:
        keras.models.clone_model(wrapped)
    except Exception as err:  # noqa: BLE001 -- Keras raises TypeError or ValueError with a long config dump
        raise ValueError(
            f"train_model copies your model (to leave it unchanged and to average its weights) with "
            f"keras.models.clone_model, which rebuilds a subclassed model as "
            f"{type(model).__name__}.from_config(model.get_config()); that failed ({type(err).__name__}). Let "
            f"{type(model).__name__}.__init__ take **kwargs and pass them to super().__init__ (and return its own "
            "arguments from get_config()), or build the model with keras.Sequential or the functional API") from None
    return wrapped


def _check_eps(settings: dict) -> None:
    eps = settings.get("eps")
    if eps is None:
        return
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a number > 0 (the training radius, pixels in [0, 1]), got {eps!r}: eps 0 "
                         "would train with no attack; for that, train with defense='none'")


def _averaged_model(template, record):
    """A copy of ``template`` holding the run's averaged weights (the file --mode eval reads)."""
    import keras

    from training.rundir import EMA_WEIGHTS_FILE

    path = record.run_dir / EMA_WEIGHTS_FILE
    if not path.exists():
        return None
    model = keras.models.clone_model(template)
    model.load_weights(str(path))
    return model


def train_model(model, defense: str, train_data, test_data, *, run_dir: str, epochs: int = 10,
                batch_size: int = 128, lr: float = 5e-4, seed: int = 0, augment: str = "none",
                name: str = "arrays", verbose: int = 1, say=print, **settings) -> TrainedModel:
    """Trains a copy of ``model`` with ``defense`` (none, fgm, pgd, fgsm_rs, trades, pgn, l2l, rvs) on
    ``train_data`` and measures each epoch on ``test_data``; returns TrainedModel(model, record).

    ``train_data``, ``test_data``: (images, labels) or a tf.data.Dataset of (images, labels).
    ``settings``: any setting of the defense, of training or of the run directory by its flag name
    (``eps=0.5``, ``c_l=50``, ``ema_decay=0.998``, ``stop_after_steps=100``, ``overwrite=True``;
    docs/defenses.md and docs/training.md list them). ``augment``: none, shift or flip_shift.
    ``verbose``: 1 prints each epoch's lines and progress bar, 0 prints nothing (as in
    ``evaluate_model``). ``say``: where the lines go when ``verbose`` is 1."""
    import data
    from models.user_model import check_model
    from training.config import DefenseConfig, RunConfig, TrainConfig
    from training.defenses import NAMES
    from training.loop import train

    if defense not in NAMES:
        raise ValueError(f"unknown defense {defense!r}: choose one of {', '.join(NAMES)}")
    if isinstance(verbose, bool) or verbose not in (0, 1):
        raise ValueError(f"verbose must be 0 (silent) or 1 (each epoch's lines and progress bar), got {verbose!r}")
    if not hasattr(model, "count_params") or not callable(model):
        raise ValueError("model must be a Keras model (images in [0, 1] -> logits)")
    settings = {k: v.item() if isinstance(v, np.generic) else v for k, v in settings.items()}  # JSON-ready
    x_train, y_train = _data(train_data, "train")
    x_test, y_test = _data(test_data, "test")
    classes = int(max(y_train.max(), y_test.max())) + 1
    dataset = data.Dataset(name=f"{data.ARRAYS_PREFIX}{name}", train_images=x_train, train_labels=y_train,
                           test_images=x_test, test_labels=y_test, num_classes=classes,
                           class_names=tuple(str(c) for c in range(classes)), source="arrays given to train_model")
    check_model(model, x_test[:2].astype(np.float32) / 255.0, np.array([classes - 1]))  # every label < K
    model = _trainable_copy(model, dataset.image_shape)
    groups = {"train": {f.name for f in dataclasses.fields(TrainConfig)},
              "run": {f.name for f in dataclasses.fields(RunConfig)} - {"run_dir"},
              "defense": set(DefenseConfig.setting_names(defense))}
    unknown = [k for k in settings if not any(k in names for names in groups.values())]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a setting of training, of the run or of --defense {defense} "
                         f"(its settings: {', '.join(sorted(groups['defense']))})")
    _check_eps(settings)
    pick = lambda group: {k: v for k, v in settings.items() if k in groups[group]}  # noqa: E731
    data_cfg = data.DataConfig(dataset=dataset.name, augment=augment)
    train_cfg = TrainConfig(**{"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, **pick("train")})
    defense_cfg = DefenseConfig(defense, **pick("defense"))
    run_cfg = RunConfig(run_dir=str(run_dir), **pick("run"))
    record = train(data_cfg, train_cfg, defense_cfg, run_cfg, flags={"api": "training.train_model", **settings},
                   say=say if verbose else (lambda *_: None), classifier=model, dataset=dataset,
                   progress=bool(verbose))
    return TrainedModel(_averaged_model(model, record), record)
