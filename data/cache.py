"""Decoded-array cache: one .npz per dataset source under <data_dir>/decoded_cache/ (or --cache_dir).

Decoding the 60,000 JPEGs of the shared CIFAR-10 copy takes 10-30 s; reading the
decoded uint8 arrays back from an uncompressed .npz takes well under a second.
Uncompressed on purpose: zlib would save little on natural images and cost
seconds on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile

import numpy as np
from tensorflow_datasets.core import constants as tfds_constants

# Bump when the stored arrays change meaning, so that old files are not reused.
CACHE_FORMAT = 1
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "class_names",
              "source")
# Written when the source has them (image folders: each image's path relative to the root); a cache
# written before they existed simply lacks them, and the folder loader decodes again to add them.
OPTIONAL_KEYS = ("train_ids", "test_ids")

_log = logging.getLogger(__name__)


def cache_root(data_dir: str | None, cache_dir: str | None = None) -> str:
    """``cache_dir`` itself when given (--cache_dir), else <data_dir>/decoded_cache, with tfds's
    own default (~/tensorflow_datasets or $TFDS_DATA_DIR) when data_dir is None, so the cache
    sits beside the tfds copies."""
    if cache_dir:
        return os.path.abspath(os.path.expanduser(cache_dir))
    base = os.path.expanduser(data_dir) if data_dir else tfds_constants.DATA_DIR
    return os.path.join(os.path.abspath(base), "decoded_cache")


def cache_path(data_dir: str | None, label: str, key_parts: list, cache_dir: str | None = None) -> str:
    """The cache file for a source identified by key_parts (JSON-able; paths in it resolved
    with os.path.realpath by the caller, so a folder read through a symlink shares its cache).

    The readable label only helps a person find the file; the hash of the key is
    what makes a changed source miss the cache.
    """
    key = json.dumps([CACHE_FORMAT, *key_parts], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
    return os.path.join(cache_root(data_dir, cache_dir), f"{safe_label}-{digest}.npz")


def read_cache(path: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if absent or unreadable (then the caller decodes again)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in ARRAY_KEYS + OPTIONAL_KEYS if key in ARRAY_KEYS or key in npz}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        _log.warning("ignoring unreadable decoded cache %s (%s); decoding again", path, err)
        return None


def write_cache(path: str, arrays: dict[str, np.ndarray], say=print) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace, and say where
    and how big (one line: the CIFAR-10 copy's cache is 184 MB, not something to write silently).

    Two runs started together may both decode and write; each replace is atomic,
    so a reader never sees half a file. Failing to write only costs speed, so it
    is logged, not raised.
    """
    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{key: arrays[key] for key in ARRAY_KEYS + OPTIONAL_KEYS if key in arrays})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is meant to be shared
        os.replace(tmp, path)
        tmp = None
        say(f"decoded images cached in {path} ({os.path.getsize(path) / 1e6:.1f} MB; "
            "--cache_dir chooses another place)")
    except OSError as err:
        _log.warning("could not write decoded cache %s (%s); the next load decodes again",
                     path, err)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
