"""Every example carries an id another tool can use to find the same image: a tfds index, or an
image folder's path relative to its root; subsets keep each example's own id."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import data
from data import cache
from tests.conftest import write_image_folder


def test_folder_ids_are_relative_paths_that_hold_the_same_pixels(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=3, per_class_train=4, per_class_test=4)
    cfg = data.DataConfig(dataset=f"folder:{root}", cache_dir=str(tmp_path / "cache"), test_limit=6)
    ds = data.load_dataset(cfg)
    assert len(ds.test_ids) == 6 and len(set(ds.test_ids)) == 6
    for image, label, path in zip(ds.test_images, ds.test_labels, ds.test_ids):
        assert path.startswith("test/")
        assert path.split("/")[1] == ds.class_names[label]
        np.testing.assert_array_equal(np.asarray(Image.open(root / path)), image)
    assert all(str(p).startswith("train/") for p in ds.train_ids) and len(ds.train_ids) == 12
    # From the decoded cache the ids are the same.
    again = data.load_dataset(cfg)
    assert list(again.test_ids) == list(ds.test_ids)


def test_a_cache_written_without_ids_is_decoded_again(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=2, per_class_train=2, per_class_test=2)
    cfg = data.DataConfig(dataset=f"folder:{root}", cache_dir=str(tmp_path / "cache"))
    ds = data.load_dataset(cfg)
    [path] = list((tmp_path / "cache").glob("*.npz"))
    with np.load(path) as npz:
        old = {k: npz[k] for k in cache.ARRAY_KEYS}
    np.savez(path, **old)  # as written before ids existed
    assert "test_ids" not in cache.read_cache(str(path))
    reloaded = data.load_dataset(cfg)
    assert list(reloaded.test_ids) == list(ds.test_ids)
    assert "test_ids" in cache.read_cache(str(path))


def test_ids_default_to_the_index_and_must_match_the_examples():
    images, labels = np.zeros((3, 2, 2, 1), np.uint8), np.zeros(3, np.int32)
    ds = data.Dataset("x", images, labels, images, labels, 1, ("a",), "test")
    np.testing.assert_array_equal(ds.test_ids, [0, 1, 2])
    with pytest.raises(data.DatasetError, match="ids"):
        data.Dataset("x", images, labels, images, labels, 1, ("a",), "test", test_ids=np.arange(2))
