"""Where images come from: tfds datasets, image folders and NumPy archives, decoded once into uint8 arrays.

`load_dataset` is the only entry point. Every source ends in the same arrays,
cached by `data.cache`, then cut to the requested class-balanced subsets.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
import urllib.parse

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from training import native_stderr

from . import cache
from .dataset import (ARRAYS_PREFIX, FOLDER_LAYOUT_HINT, FOLDER_PREFIX, NPZ_PREFIX, CorruptImageError, DataConfig,
                      Dataset, DatasetError)
from .npz import load_npz_arrays
from .subsets import balanced_subset

SPLITS = ("train", "test")
CONNECT_TIMEOUT_S = 3.0
_DECODE_BATCH = 1024


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load both splits into memory (from the decoded cache when possible).

    Raises DatasetError, with a one-line message naming the fix, for every
    failure the user can act on: unknown name, missing folder, data not
    prepared and no internet, undecodable or mixed-size images, bad limits.
    """
    if cfg.dataset.startswith(ARRAYS_PREFIX):
        raise DatasetError(f"{cfg.dataset} was data given in Python to training.train_model: evaluate its runs "
                           "with eval.evaluate_model on the same arrays")
    if cfg.dataset.startswith(FOLDER_PREFIX):
        full = _load_folder(cfg)
    elif cfg.dataset.startswith(NPZ_PREFIX):
        full = _dataset_from_arrays(cfg.dataset, load_npz_arrays(cfg.dataset, cfg.data_dir, cfg.cache_dir))
    else:
        full = _load_tfds(cfg)
    if not cfg.allow_missing_classes:
        _check_classes(full, cfg.dataset)
    return _apply_limits(full, cfg)


def _check_classes(full: Dataset, name: str) -> None:
    """Refuses a dataset with a class that has images in one split and none in the other."""
    train = np.bincount(full.train_labels, minlength=full.num_classes)
    test = np.bincount(full.test_labels, minlength=full.num_classes)
    for c in range(full.num_classes):
        if (train[c] == 0) != (test[c] == 0):
            has, lacks, count = ("training", "test", train[c]) if train[c] else ("test", "training", test[c])
            raise DatasetError(
                f"class {full.class_names[c]!r} of {name} has {count} {has} images and no {lacks} images: accuracy "
                f"would be over {int(np.sum((train > 0) & (test > 0)))} of {full.num_classes} classes; add its "
                f"{lacks} images, or --allow_missing_classes if this is intended")


def _apply_limits(full: Dataset, cfg: DataConfig) -> Dataset:
    changes = {}
    for split, limit in (("train", cfg.train_limit), ("test", cfg.test_limit)):
        if limit:
            labels = getattr(full, f"{split}_labels")
            keep = balanced_subset(labels, limit, full.num_classes, split=split)
            changes[f"{split}_images"] = getattr(full, f"{split}_images")[keep]
            changes[f"{split}_labels"] = labels[keep]
            changes[f"{split}_ids"] = getattr(full, f"{split}_ids")[keep]
    return dataclasses.replace(full, **changes) if changes else full


def _dataset_from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Dataset:
    class_names = tuple(str(c) for c in arrays["class_names"])
    return Dataset(
        name=name,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int32, copy=False),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int32, copy=False),
        num_classes=len(class_names),
        class_names=class_names,
        source=str(arrays["source"]),
        train_ids=arrays.get("train_ids"),
        test_ids=arrays.get("test_ids"),
    )


def _one_line(err: BaseException) -> str:
    """An exception as one short line, for DatasetError messages."""
    text = " ".join(str(err).split()) or "no message"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(err).__name__}: {text}"


def _tf_reason(err: tf.errors.OpError) -> str:
    """A TensorFlow error in its own words, without the graph plumbing around them
    ({{function_node __wrapped__...}}, [Op:...], the tf.data iterator chain)."""
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", getattr(err, "message", str(err)))
    text = text.split("Iterator::")[-1].split(": ", 1)[-1] if "Iterator::" in text else text
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _native_stderr_held_back():
    """Holds back what C libraries write to file descriptor 2 while images decode: libjpeg prints
    "Improper call to JPEG library in state 201" for a truncated file, beside the one-line
    DatasetError that names it. When decoding ends any other way (success included: libjpeg's
    "Corrupt JPEG data" warnings for a file it could still decode), what was held back is shown."""
    return native_stderr.held_back(show=lambda error: not isinstance(error, DatasetError))


# ----------------------------------------------------------------------------- tfds


def _load_tfds(cfg: DataConfig) -> Dataset:
    name = cfg.dataset
    root = os.path.abspath(os.path.expanduser(cfg.data_dir)) if cfg.data_dir else None
    shown_root = root or tfds.core.constants.DATA_DIR
    try:
        builder = tfds.builder(name, data_dir=root)
    except Exception as err:  # any tfds failure must reach the user as one line
        raise DatasetError(f"could not open tfds dataset {name!r} in {shown_root}: "
                           f"{_one_line(err)}") from err
    source = f"tfds {name}:{builder.version} in {shown_root}"
    path = cache.cache_path(cfg.data_dir, f"{name}-{builder.version}",
                            ["tfds", name, str(builder.version), os.path.realpath(builder.data_dir)],
                            cfg.cache_dir)
    arrays = cache.read_cache(path)
    if arrays is None:
        _prepare_tfds(builder, name, shown_root)
        arrays = _read_tfds(builder, name, shown_root)
        arrays["source"] = np.array(source)
        cache.write_cache(path, arrays)
    return _dataset_from_arrays(name, {**arrays, "source": np.array(source)})


def _prepare_tfds(builder, name: str, root: str) -> None:
    """Make sure the tfds copy exists, without ever waiting on tfds's download retries offline."""
    if builder.is_prepared():
        return
    manual_dir = os.path.join(root, "downloads", "manual")
    urls = sorted((builder.url_infos or {}).items())
    archives = [info.filename for _, info in urls if info.filename]
    if archives and all(os.path.exists(os.path.join(manual_dir, f)) for f in archives):
        # Checked for cifar10 with tfds 4.9.10: its DownloadManager looks for each
        # URL's file name in manual_dir before downloading, so the official
        # cifar-10-binary.tar.gz placed there is used (checksum verified) and
        # nothing is fetched; try_download_gcs=False stops the GCS mirror lookup.
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        what = f"from the archive(s) in {manual_dir}"
        fix = f"replace {', '.join(archives)} in {manual_dir} with the official file(s)"
    else:
        host, port = _download_host(urls)
        if not _host_reachable(host, port):
            wanted = ", ".join(archives) or "the archive"
            raise DatasetError(
                f"dataset {name!r} is not prepared in {root} and there is no internet to "
                f"download it ({host} unreachable): pass --data_dir DIR holding a prepared "
                f"tfds copy (or DIR/downloads/manual/ with {wanted}), or use --dataset "
                f"{FOLDER_PREFIX}PATH with {FOLDER_LAYOUT_HINT}")
        config = None
        what = "by downloading it"
        fix = "check the network and the disk space, or pass --data_dir DIR holding a prepared copy"
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as err:  # any tfds failure must reach the user as one line
        raise DatasetError(f"could not prepare tfds dataset {name!r} in {root} {what} "
                           f"({_one_line(err)}): {fix}") from err


def _download_host(urls: list) -> tuple[str, int]:
    """Host and port of the dataset's first download URL (tfds's GCS mirror if it has none)."""
    for url, _ in urls:
        parsed = urllib.parse.urlparse(url)
        if parsed.hostname:
            return parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    return "storage.googleapis.com", 443


def _host_reachable(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within about 2 * timeout_s.

    getaddrinfo has no timeout of its own and can block for a minute on a broken
    resolver, so it runs in a daemon thread that is abandoned after timeout_s.
    """
    found = {}

    def resolve():
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            pass

    resolver = threading.Thread(target=resolve, name=f"resolve-{host}", daemon=True)
    resolver.start()
    resolver.join(timeout_s)
    for *_, address in found.get("addresses", [])[:2]:
        try:
            with socket.create_connection(address[:2], timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def _read_tfds(builder, name: str, root: str) -> dict[str, np.ndarray]:
    try:
        image_key, label_key = builder.info.supervised_keys
        arrays = {"class_names": np.array(builder.info.features[label_key].names)}
        for split in SPLITS:
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
            images, labels = [], []
            for image_batch, label_batch in ds.batch(_DECODE_BATCH).as_numpy_iterator():
                images.append(image_batch)
                labels.append(label_batch)
            if not images:
                raise DatasetError(f"the {split} split of tfds dataset {name!r} in {root} is "
                                   "empty: prepare it again (delete its folder) or pick another")
            arrays[f"{split}_images"] = np.concatenate(images).astype(np.uint8, copy=False)
            arrays[f"{split}_labels"] = np.concatenate(labels).astype(np.int32)
    except DatasetError:
        raise
    except Exception as err:  # any tfds failure must reach the user as one line
        raise DatasetError(f"could not read tfds dataset {name!r} in {root} "
                           f"({_one_line(err)}): delete its folder to prepare it again") from err
    return arrays


# --------------------------------------------------------------------------- folders


def _load_folder(cfg: DataConfig) -> Dataset:
    root = os.path.abspath(os.path.expanduser(cfg.dataset[len(FOLDER_PREFIX):]))
    if not os.path.isdir(root):
        raise DatasetError(f"image folder {root} does not exist: pass --dataset "
                           f"{FOLDER_PREFIX}PATH with {FOLDER_LAYOUT_HINT}")
    missing = [f"{split}/" for split in SPLITS if not os.path.isdir(os.path.join(root, split))]
    if missing:
        raise DatasetError(f"image folder {root} has no {' and no '.join(missing)} "
                           f"subfolder: lay it out as {FOLDER_LAYOUT_HINT}")
    # The key holds the resolved path: the same folder read through a symlink reuses its cache.
    real = os.path.realpath(root)
    num_files, total_bytes, latest_mtime_ns = _fingerprint(real)
    source = f"image folder {root} ({num_files} files)"
    path = cache.cache_path(cfg.data_dir, f"folder-{os.path.basename(real)}",
                            ["folder", real, num_files, total_bytes, latest_mtime_ns], cfg.cache_dir)
    arrays = cache.read_cache(path)
    if arrays is None or any(key not in arrays for key in cache.OPTIONAL_KEYS):
        with _native_stderr_held_back():
            arrays = _decode_folder(root)
        arrays["source"] = np.array(source)
        cache.write_cache(path, arrays)
    # The source as read this time (the cache may have been written through another path).
    return _dataset_from_arrays(FOLDER_PREFIX + root, {**arrays, "source": np.array(source)})


def _fingerprint(root: str) -> tuple[int, int, int]:
    """(files, bytes, latest mtime in ns) under root/train and root/test.

    Folder mtimes count too, so that moving a file between classes (which
    changes no file's own mtime or size) still invalidates the cache. ~0.3 s for
    60,000 files.
    """
    num_files = total_bytes = latest = 0
    pending = [os.path.join(root, split) for split in SPLITS]
    while pending:
        folder = pending.pop()
        latest = max(latest, os.stat(folder).st_mtime_ns)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file():
                    stat = entry.stat()
                    num_files += 1
                    total_bytes += stat.st_size
                    latest = max(latest, stat.st_mtime_ns)
    return num_files, total_bytes, latest


def _decode_folder(root: str) -> dict[str, np.ndarray]:
    """Decode both splits with tfds.ImageFolder's file list and labels (sorted class folders).

    tfds would decode one image per tf.data element with shape (None, None, C);
    decoding raw bytes ourselves in batches of 1024 (tf.map_fn) is ~2x faster and
    lets a mismatched size be reported with its file name. The size and channel
    count are those of the first training image; other images are converted to
    that channel count, and must have that size.
    """
    try:
        builder = tfds.ImageFolder(root)
    except Exception as err:  # any tfds failure must reach the user as one line
        raise DatasetError(f"could not list image folder {root} ({_one_line(err)}): lay it "
                           f"out as {FOLDER_LAYOUT_HINT}") from err
    for split in SPLITS:
        if split not in builder.info.splits or not builder.info.splits[split].num_examples:
            raise DatasetError(f"image folder {root}/{split}/ holds no .jpg/.jpeg/.png "
                               f"images in class subfolders: lay it out as {FOLDER_LAYOUT_HINT}")
    raw = {"image": tfds.decode.SkipDecoding()}
    first = next(iter(builder.as_dataset(split="train", decoders=raw).take(1)))
    first_name = first["image/filename"].numpy().decode()
    try:
        shape = tuple(tf.io.decode_image(first["image"], expand_animations=False).shape)
    except tf.errors.OpError as err:
        raise CorruptImageError(f"cannot decode image {first_name} ({_tf_reason(err)}): remove it "
                                "or replace it with a valid JPEG or PNG") from None
    arrays = {"class_names": np.array(builder.info.features["label"].names)}
    for split in SPLITS:
        images, labels, paths = _decode_split(builder, split, shape, first_name)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_ids"] = np.array([os.path.relpath(p, root) for p in paths])
    return arrays


def _decode_split(builder, split: str, shape: tuple[int, int, int], first_name: str):
    height, width, channels = shape
    raw = {"image": tfds.decode.SkipDecoding()}

    def decode_one(encoded):
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        # int64 then cast: a raw tf.shape result in a map_fn output trips a spurious
        # TF type-inference warning (TFT_SHAPE_TENSOR vs TFT_TENSOR).
        size = tf.cast(tf.shape(image, out_type=tf.int64), tf.int32)
        fits = tf.reduce_all(tf.equal(size[:2], [height, width]))
        # A wrong-sized image becomes zeros plus its size, so the batch can still be
        # stacked and the offending file named afterwards.
        image = tf.cond(fits, lambda: tf.reshape(image, shape),
                        lambda: tf.zeros(shape, tf.uint8))
        return image, size

    def decode_batch(batch):
        images, sizes = tf.map_fn(
            decode_one, batch["image"], parallel_iterations=16,
            fn_output_signature=(tf.TensorSpec(shape, tf.uint8),
                                 tf.TensorSpec([3], tf.int32)))
        return images, tf.cast(batch["label"], tf.int32), sizes, batch["image/filename"]

    ds = builder.as_dataset(split=split, decoders=raw).batch(_DECODE_BATCH)
    ds = ds.map(decode_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images, labels, paths = [], [], []
    try:
        for image_batch, label_batch, sizes, names in ds.as_numpy_iterator():
            wrong = np.flatnonzero(np.any(sizes[:, :2] != (height, width), axis=1))
            if wrong.size:
                bad = names[wrong[0]].decode()
                raise DatasetError(
                    f"image {bad} is {sizes[wrong[0], 1]}x{sizes[wrong[0], 0]} but {first_name} "
                    f"is {width}x{height}: all images of a folder dataset must share one size; "
                    "resize or remove the odd ones")
            images.append(image_batch)
            labels.append(label_batch)
            paths.extend(name.decode() for name in names)
    except tf.errors.OpError as err:
        # from None: the chained TensorFlow error would print its {{function_node ...}} text.
        bad, reason = _first_undecodable(builder, split) or (f"an image under {split}/", _tf_reason(err))
        raise CorruptImageError(f"cannot decode image {bad} ({reason}): remove it or replace it "
                                "with a valid JPEG or PNG") from None
    return np.concatenate(images), np.concatenate(labels), paths


def _first_undecodable(builder, split: str) -> tuple[str, str] | None:
    """(file, reason) of the first file that tf cannot decode, found one by one (only on the
    error path)."""
    raw = {"image": tfds.decode.SkipDecoding()}
    for example in builder.as_dataset(split=split, decoders=raw).as_numpy_iterator():
        try:
            tf.io.decode_image(example["image"], expand_animations=False)
        except tf.errors.OpError as err:
            return example["image/filename"].decode(), _tf_reason(err)
    return None
