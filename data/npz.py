"""NumPy archives as a dataset source: ``--dataset npz:PATH``.

The archive holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` as ``keras.datasets`` gives them
(saved once with ``np.savez``): images uint8 in 0-255 or float in [0, 1], shaped [N, H, W, C] or
[N, H, W] (one channel); labels integers, shaped [N] or [N, 1]. Optional ``label_names`` or
``fine_label_names`` name the classes (else "0", "1", ...). Every way an archive can be wrong is a
DatasetError of one line naming the key and the fix, checked before anything trains.

Decompressing a compressed archive costs seconds (CIFAR-100: ~2 s); the validated uint8 arrays go
to the same decoded cache as the other sources, keyed by the file's resolved path, size and mtime,
and the run records name the file with its sha256.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib

import numpy as np

from . import cache
from .dataset import NPZ_LAYOUT_HINT, NPZ_PREFIX, DatasetError

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
NAME_KEYS = ("label_names", "fine_label_names", "class_names")
_QUANTISE_TOLERANCE = 1e-3  # float images off the 1/255 grid by more than this (in 0-255 units) are said


def npz_path(dataset: str) -> str:
    """The absolute path that ``npz:PATH`` names."""
    return os.path.abspath(os.path.expanduser(dataset[len(NPZ_PREFIX):]))


def load_npz_arrays(dataset: str, data_dir: str | None, cache_dir: str | None, say=print) -> dict:
    """The cache's arrays (train/test images, labels, class names, source) for ``npz:PATH``."""
    path = npz_path(dataset)
    if not os.path.isfile(path):
        read_archive(path)  # says what is wrong with the path
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = cache.cache_path(data_dir, f"npz-{os.path.basename(real)}",
                           ["npz", real, stat.st_size, stat.st_mtime_ns], cache_dir)
    arrays = cache.read_cache(key)
    if arrays is None:
        arrays = read_archive(path, say=say)
        arrays["source"] = np.array(f"NumPy archive {path} (sha256 {file_sha256(real)})")
        cache.write_cache(key, arrays, say=say)
    return arrays


def load_npz(path: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` from an archive, as ``keras.datasets.*.load_data()``
    returns them, after the same checks as ``--dataset npz:PATH``: uint8 [N, H, W, C] images, int32 [N]
    labels, ready for ``training.train_model`` and ``eval.evaluate_model`` (divide x by 255 there)."""
    arrays = read_archive(npz_path(NPZ_PREFIX + str(path)), say=print)
    return ((arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"]))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_archive(path: str, say=print) -> dict:
    """Reads and checks every key; uint8 images, int32 labels, class names."""
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise DatasetError(f"NumPy archive {path} {what}: pass --dataset {NPZ_PREFIX}PATH to an .npz file "
                           f"with {NPZ_LAYOUT_HINT}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            present = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in present]
            if missing:
                raise DatasetError(f"NumPy archive {path} lacks {', '.join(missing)} (it holds "
                                   f"{', '.join(sorted(present)) or 'nothing'}): save it with {NPZ_LAYOUT_HINT}")
            raw = {k: npz[k] for k in REQUIRED_KEYS}
            names_key = next((k for k in NAME_KEYS if k in present), None)
            names = npz[names_key] if names_key else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise DatasetError(f"{path} is not a readable NumPy .npz archive ({type(err).__name__}: {reason}): it is "
                           f"truncated or another format; save it again with np.savez (keys {NPZ_LAYOUT_HINT})") from None
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = _images(path, f"x_{split}", raw[f"x_{split}"], say)
        arrays[f"{split}_labels"] = _labels(path, f"y_{split}", raw[f"y_{split}"], len(arrays[f"{split}_images"]))
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"NumPy archive {path}: x_train images are {arrays['train_images'].shape[1:]} but x_test "
                           f"images are {arrays['test_images'].shape[1:]}: both splits need one image shape")
    arrays["class_names"] = _class_names(path, names_key, names, arrays)
    return arrays


def _images(path: str, key: str, x: np.ndarray, say) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]  # keras.datasets.mnist: [N, H, W]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
        raise DatasetError(f"NumPy archive {path}: {key} has shape {x.shape}; it must be a non-empty "
                           "[N, H, W, C] with C 1 or 3 (or [N, H, W])")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"NumPy archive {path}: {key} is {x.dtype}; images must be uint8 in 0-255 or float "
                           "in [0, 1]")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise DatasetError(f"NumPy archive {path}: {key} holds {bad} NaN or infinite pixel value(s): replace them "
                           "before saving")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        hint = " (it looks like 0-255: save it as uint8)" if high > 1.0 and high <= 255.0 else ""
        raise DatasetError(f"NumPy archive {path}: {key} spans [{low:g}, {high:g}]; float images must lie in "
                           f"[0, 1]{hint}")
    scaled = x.astype(np.float64) * 255.0
    quantised = np.rint(scaled)
    off = float(np.max(np.abs(scaled - quantised)))
    if off > _QUANTISE_TOLERANCE:
        say(f"note: {key} of {path} is float and not on the 1/255 grid: kept as 8-bit images (each pixel moved "
            f"by at most {off / 255.0:.4f})")
    return quantised.astype(np.uint8)


def _labels(path: str, key: str, y: np.ndarray, count: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # keras.datasets: [N, 1]
    if y.ndim != 1 or len(y) != count:
        one_hot = " (one-hot labels: save np.argmax(y, axis=1))" if y.ndim == 2 else ""
        raise DatasetError(f"NumPy archive {path}: {key} has shape {y.shape}; it must be [{count}] or [{count}, 1] "
                           f"integer labels, one per image{one_hot}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DatasetError(f"NumPy archive {path}: {key} holds non-integer labels: labels are class ids 0..K-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"NumPy archive {path}: {key} is {y.dtype}; labels must be integer class ids")
    if y.size and y.min() < 0:
        raise DatasetError(f"NumPy archive {path}: {key} holds label {int(y.min())}; labels are class ids 0..K-1")
    if y.size and y.max() > np.iinfo(np.int32).max:
        raise DatasetError(f"NumPy archive {path}: {key} holds label {int(y.max())}; labels are class ids 0..K-1")
    return y.astype(np.int32)


def _class_names(path: str, names_key: str | None, names, arrays: dict) -> np.ndarray:
    top = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    if names is None:
        return np.array([str(c) for c in range(top)])
    names = np.asarray(names).reshape(-1)
    if names.dtype.kind not in "US":
        raise DatasetError(f"NumPy archive {path}: {names_key} is {names.dtype}; class names must be strings")
    if len(names) < top:
        raise DatasetError(f"NumPy archive {path}: a label is {top - 1} but {names_key} names {len(names)} classes: "
                           f"labels must lie in [0, {len(names)})")
    return np.array([n.decode() if isinstance(n, bytes) else str(n) for n in names])
