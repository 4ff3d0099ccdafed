"""Train *your* Keras classifier with any registered defense, from Python.

    from training import train_model
    result = train_model(model, "pgd", (x_train, y_train), (x_test, y_test), run_dir="runs/mine", epochs=10,
                         eps=0.5, pgd_steps=10)

The run is an ordinary run directory (config.json, metrics.jsonl, TensorBoard, checkpoints, the
averaged weights ``ema_classifier.weights.h5``): the same loop as ``run.py --mode train``
(``training/loop.py``), so the exponential moving average, the checkpoints, the lock and the exact
resume hold: the same call on the same directory goes on where a stopped one ended. ``model`` must
be a Keras model that ``keras.models.clone_model`` can copy (functional or Sequential) mapping
images in [0, 1] to logits; it is copied, not changed. Images are kept as uint8, as every dataset
of this tool: give uint8 images, or float images in [0, 1] that are multiples of 1/255.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def _arrays(data, split: str):
    """(uint8 images, int32 labels) from a pair of arrays or a tf.data.Dataset of (image, label)."""
    if hasattr(data, "as_numpy_iterator"):
        xs, ys = [], []
        for x, y in data.as_numpy_iterator():
            xs.append(x if np.ndim(x) == 4 else np.asarray(x)[None])
            ys.append(np.atleast_1d(y))
        if not xs:
            raise ValueError(f"{split}_data is an empty dataset")
        x, y = np.concatenate(xs), np.concatenate(ys)
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError(f"{split}_data must be (images, labels) or a tf.data.Dataset of (image, label) "
                             "pairs") from None
        x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"{split} images must be [N, H, W, C], got shape {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        hint = " (one-hot? give y.argmax(-1))" if y.ndim == 2 else ""
        raise ValueError(f"{split} labels must be {len(x)} integers of shape [N], got shape {y.shape} "
                         f"dtype {y.dtype}{hint}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{split} images must be uint8 or float in [0, 1], got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{split} images must lie in [0, 1], got {float(x.min()):g} to {float(x.max()):g}")
        scaled = np.round(x * 255.0)
        if np.abs(scaled - x * 255.0).max(initial=0.0) > 1e-3:
            raise ValueError(f"{split} images are not multiples of 1/255: the loop keeps images as uint8, so give "
                             "uint8 images (or float images quantised to 8 bits)")
        x = scaled.astype(np.uint8)
    return x, y.astype(np.int32)


def train_model(model, defense: str, train_data, test_data, *, run_dir: str, epochs: int = 10,
                batch_size: int = 128, lr: float = 5e-4, seed: int = 0, augment: str = "none",
                name: str = "arrays", say=print, **settings):
    """Trains ``model`` with ``defense`` (none, fgm, pgd, fgsm_rs, trades, pgn, l2l, rvs) on
    ``train_data`` and measures each epoch on ``test_data``; returns training.loop.TrainResult.

    ``settings``: any setting of the defense, of training or of the run directory by its flag name
    (``eps=0.5``, ``c_l=50``, ``ema_decay=0.998``, ``stop_after_steps=100``, ``overwrite=True``;
    docs/defenses.md and docs/training.md list them). ``augment``: none, shift or flip_shift."""
    import data
    from training.config import DefenseConfig, RunConfig, TrainConfig
    from training.defenses import NAMES
    from training.loop import train

    if defense not in NAMES:
        raise ValueError(f"unknown defense {defense!r}: choose one of {', '.join(NAMES)}")
    if not hasattr(model, "count_params") or not callable(model):
        raise ValueError("model must be a Keras model (images in [0, 1] -> logits)")
    x_train, y_train = _arrays(train_data, "train")
    x_test, y_test = _arrays(test_data, "test")
    classes = int(max(y_train.max(), y_test.max())) + 1
    dataset = data.Dataset(name=f"{data.ARRAYS_PREFIX}{name}", train_images=x_train, train_labels=y_train,
                           test_images=x_test, test_labels=y_test, num_classes=classes,
                           class_names=tuple(str(c) for c in range(classes)), source="arrays given to train_model")
    if not model.built:
        model.build((None, *dataset.image_shape))
    logits = np.asarray(model(x_test[:2].astype(np.float32) / 255.0, training=False))
    if logits.ndim != 2 or logits.shape[1] < classes:
        raise ValueError(f"the model must return logits [N, K] with K >= {classes} (the labels' classes), "
                         f"got shape {logits.shape}")
    if np.all(logits >= 0) and np.allclose(logits.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("the model returns probabilities (non-negative outputs that sum to 1): give it logits, "
                         "e.g. without its final softmax")
    groups = {"train": {f.name for f in dataclasses.fields(TrainConfig)},
              "run": {f.name for f in dataclasses.fields(RunConfig)} - {"run_dir"},
              "defense": set(DefenseConfig.setting_names(defense))}
    unknown = [k for k in settings if not any(k in names for names in groups.values())]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a setting of training, of the run or of --defense {defense} "
                         f"(its settings: {', '.join(sorted(groups['defense']))})")
    pick = lambda group: {k: v for k, v in settings.items() if k in groups[group]}  # noqa: E731
    data_cfg = data.DataConfig(dataset=dataset.name, augment=augment)
    train_cfg = TrainConfig(**{"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, **pick("train")})
    defense_cfg = DefenseConfig(defense, **pick("defense"))
    run_cfg = RunConfig(run_dir=str(run_dir), **pick("run"))
    return train(data_cfg, train_cfg, defense_cfg, run_cfg, flags={"api": "training.train_model", **settings},
                 say=say, classifier=model, dataset=dataset)
