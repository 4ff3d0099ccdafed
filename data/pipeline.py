"""tf.data pipelines over the in-memory uint8 arrays: augmented training batches, test batches.

Every training batch is a pure function of (seed, epoch, batch index): the order
is a numpy permutation seeded with (seed, epoch) and the augmentation uses
stateless random ops seeded with (seed, epoch) folded with the batch index, so a
run resumed mid-epoch with `skip_batches` sees bit-identical batches. Work is
done per batch, not per image (one gather, one pad, two gathers for the crop
and flip), which keeps the pipeline far ahead of any train step on the CPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .dataset import FOLDER_PREFIX, NPZ_PREFIX, DatasetError

# Fixed parallelism, tf.data's autotuning off: with autotuning, deleting an epoch's iterator waits
# for the autotuner's thread, which under CPU contention wakes only at its next optimisation period
# (up to 60 s); measured with py-spy on a 2-core machine, 20-40 s lost at the end of most epochs
# (RootDataset::Iterator::~Iterator waiting on the autotuner's UnboundedThreadPool thread). A batch
# costs ~1/100 of a train step here, so two parallel calls and two prefetched batches keep ahead.
PARALLEL_CALLS = 2
PREFETCH_BATCHES = 2
SHIFT_PAD_PX = 4  # "random crops of 32x32 from 40x40 zero-padded images" (standard CIFAR recipe)
_MIRROR_SAFE = ("cifar10", "cifar100")  # plus folder:* and npz:*; digits must not be mirrored
_NO_MIRROR = ("svhn_cropped", "mnist")
PIPELINE_AUGMENTATIONS = ("none", "shift", "flip_shift")


def resolve_augment(cfg_augment: str, dataset_name: str) -> str:
    """"auto" -> "flip_shift" for natural images (CIFAR, folders, archives), "shift" for digits.

    A mirrored 2 or 5 is another glyph, so SVHN and MNIST only get shifts. Folders and NumPy
    archives are assumed to hold natural images: pass "shift" for digits or text.
    """
    if cfg_augment != "auto":
        if cfg_augment not in PIPELINE_AUGMENTATIONS:
            raise DatasetError(f"augment={cfg_augment!r} is invalid: choose one of auto, "
                               f"{', '.join(PIPELINE_AUGMENTATIONS)}")
        return cfg_augment
    if dataset_name in _MIRROR_SAFE or dataset_name.startswith((FOLDER_PREFIX, NPZ_PREFIX)):
        return "flip_shift"
    if dataset_name in _NO_MIRROR:
        return "shift"
    raise DatasetError(f"augment='auto' has no rule for dataset {dataset_name!r}: pass "
                       f"augment as one of {', '.join(PIPELINE_AUGMENTATIONS)}")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch; the remainder is dropped so every step has a static shape."""
    if batch_size <= 0:
        raise DatasetError(f"batch_size={batch_size} must be positive")
    steps = num_examples // batch_size
    if steps == 0:
        raise DatasetError(f"{num_examples} training examples make no full batch of "
                           f"{batch_size}: lower --batch_size or raise --train_limit")
    return steps


def train_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int,
                  epoch: int, augment: str, skip_batches: int = 0) -> tf.data.Dataset:
    """One epoch of (float32 [B, H, W, C] in [0, 1], int32 [B]) batches, remainder dropped.

    Args:
      images, labels: uint8 [N, H, W, C] and integer [N] arrays (a Dataset's splits).
      batch_size: examples per batch.
      seed, epoch: non-negative ints; together they fix the order and augmentation.
      augment: "none", "shift" or "flip_shift" (resolve "auto" with resolve_augment).
      skip_batches: start at batch k of the epoch, e.g. to resume mid-epoch; the
        batches yielded are exactly batches k, k+1, ... of the full epoch.
    """
    images, labels = _check_arrays(images, labels)
    if augment not in PIPELINE_AUGMENTATIONS:
        raise DatasetError(f"augment={augment!r} is invalid here: choose one of "
                           f"{', '.join(PIPELINE_AUGMENTATIONS)} (resolve 'auto' first with "
                           "resolve_augment)")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise DatasetError(f"{name}={value!r} must be a non-negative integer")
    steps = steps_per_epoch(len(images), batch_size)
    if not 0 <= skip_batches <= steps:
        raise DatasetError(f"skip_batches={skip_batches} is outside [0, {steps}], the "
                           "number of batches in one epoch")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(images))
    order = order[:steps * batch_size].reshape(steps, batch_size)[skip_batches:]
    batch_ids = np.arange(skip_batches, steps, dtype=np.int64)
    epoch_seed = tf.constant([int(seed), int(epoch)], tf.int64)
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(labels)

    def make_batch(batch_id, positions):
        batch_seed = tf.random.experimental.stateless_fold_in(epoch_seed, batch_id)
        x = _augment(tf.gather(images_t, positions), batch_seed, augment)
        return tf.cast(x, tf.float32) / 255.0, tf.gather(labels_t, positions)

    ds = tf.data.Dataset.from_tensor_slices((batch_ids, order.astype(np.int64)))
    ds = ds.map(make_batch, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    return _without_autotuning(ds.prefetch(PREFETCH_BATCHES))


def test_batches(images: np.ndarray, labels: np.ndarray, *,
                 batch_size: int) -> tf.data.Dataset:
    """(float32 in [0, 1], int32) batches in the arrays' order; the last batch may be smaller."""
    images, labels = _check_arrays(images, labels)
    if batch_size <= 0:
        raise DatasetError(f"batch_size={batch_size} must be positive")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
                num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    return _without_autotuning(ds.prefetch(PREFETCH_BATCHES))


def _without_autotuning(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with tf.data's autotuner off (see PARALLEL_CALLS)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _check_arrays(images, labels) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DatasetError(f"images must be uint8 [N, H, W, C] (a Dataset's arrays), got "
                           f"{images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"labels must be integers of shape [{len(images)}], got "
                           f"{labels.dtype} {labels.shape}")
    return images, labels.astype(np.int32, copy=False)


def _augment(x: tf.Tensor, seed: tf.Tensor, augment: str) -> tf.Tensor:
    """Random shift by up to SHIFT_PAD_PX (zero padding) and, for flip_shift, a horizontal flip.

    Works on the uint8 batch [B, H, W, C]: pad once, then pick each example's
    window with two batched gathers; flipping is the same column gather read
    backwards, so it costs nothing extra. Zero padding as in the usual CIFAR
    recipe (PyTorch's RandomCrop(32, padding=4)) used by the adversarial-training
    papers.
    """
    if augment == "none":
        return x
    batch, height, width, _ = x.shape
    shift_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([batch, 2], shift_seed, minval=0,
                                          maxval=2 * SHIFT_PAD_PX + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]  # [B, H] rows of the padded image
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis]  # [B, W]
    if augment == "flip_shift":
        flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
        cols = tf.where(flip[:, tf.newaxis], tf.reverse(cols, axis=[1]), cols)
    pad = SHIFT_PAD_PX
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    x = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W + 2 pad, C]
    return tf.gather(x, cols, axis=2, batch_dims=1)  # [B, H, W, C]
