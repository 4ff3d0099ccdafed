"""NumPy archives as a dataset (--dataset npz:PATH): keras.datasets layouts load, every bad archive is
one line (and exit 2 through run.py) before anything trains, the cache and the run record name the file."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from data import DataConfig, DatasetError, load_dataset, load_npz, resolve_augment
from tests.test_cli import assert_one_line_error, run_py

CIFAR100 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar100.npz"


def arrays(classes=3, train_per_class=8, test_per_class=4, size=8, seed=0) -> dict:
    """A small archive's content in keras.datasets's layout: uint8 images, (N, 1) labels."""
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(classes), train_per_class)[:, None]
    y_test = np.repeat(np.arange(classes), test_per_class)[:, None]
    return {"x_train": rng.integers(0, 256, (len(y_train), size, size, 3), dtype=np.uint8), "y_train": y_train,
            "x_test": rng.integers(0, 256, (len(y_test), size, size, 3), dtype=np.uint8), "y_test": y_test}


def save(tmp_path: Path, content: dict, name="data.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **content)
    return path


def load(path: Path, tmp_path: Path, **kwargs):
    return load_dataset(DataConfig(dataset=f"npz:{path}", data_dir=str(tmp_path / "tfds"), **kwargs))


def test_the_keras_datasets_layout_loads_with_its_labels_and_names(tmp_path):
    content = arrays()
    content["label_names"] = np.array(["cat", "dog", "eel"])
    path = save(tmp_path, content)
    ds = load(path, tmp_path)
    assert ds.name == f"npz:{path}" and ds.num_classes == 3 and ds.class_names == ("cat", "dog", "eel")
    np.testing.assert_array_equal(ds.train_images, content["x_train"])
    np.testing.assert_array_equal(ds.test_labels, content["y_test"][:, 0])
    assert ds.train_labels.dtype == np.int32
    assert hashlib.sha256(path.read_bytes()).hexdigest() in ds.source and str(path) in ds.source
    assert resolve_augment("auto", ds.name) == "flip_shift"


def test_float_images_flat_labels_and_grayscale_load_as_uint8(tmp_path):
    content = arrays()
    grid = content["x_train"].astype(np.float32) / 255.0
    content = {"x_train": grid[..., 0], "y_train": content["y_train"][:, 0],
               "x_test": content["x_test"][..., 0].astype(np.float64) / 255.0, "y_test": content["y_test"][:, 0]}
    ds = load(save(tmp_path, content), tmp_path)
    assert ds.image_shape == (8, 8, 1) and ds.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays()["x_train"][..., 0])


def test_subsets_are_class_balanced_and_the_cache_is_used_and_keyed_by_the_file(tmp_path, capsys):
    path = save(tmp_path, arrays(classes=4, train_per_class=10))
    ds = load(path, tmp_path, train_limit=8)
    assert np.bincount(ds.train_labels).tolist() == [2, 2, 2, 2]
    assert "cached in" in capsys.readouterr().out
    cached = list((tmp_path / "tfds" / "decoded_cache").glob("npz-data.npz-*.npz"))
    assert len(cached) == 1
    load(path, tmp_path)
    assert "cached in" not in capsys.readouterr().out  # read back, not written again
    changed = arrays(classes=4, train_per_class=10, seed=1)
    np.savez(path, **changed)
    os.utime(path, ns=(1, 1))  # a new file: a new size/mtime key, whatever the clock's resolution
    again = load(path, tmp_path)
    np.testing.assert_array_equal(again.train_images, changed["x_train"])


def test_load_npz_gives_keras_datasets_tuples_checked_like_the_flag(tmp_path):
    content = arrays()
    (x_train, y_train), (x_test, y_test) = load_npz(save(tmp_path, content))
    np.testing.assert_array_equal(x_test, content["x_test"])
    assert y_train.shape == (24,) and y_train.dtype == np.int32 and y_test.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(DatasetError, match="lacks x_train"):
        load_npz(save(tmp_path, _without("x_train"), name="bad.npz"))


def _without(key):
    content = arrays()
    del content[key]
    return content


def _with(**changes):
    content = arrays()
    content.update(changes)
    return content


_BAD = {
    "missing key": (_without("y_test"), ["lacks y_test"]),
    "images not 4-d": (_with(x_train=np.zeros((24, 8), np.uint8)), ["x_train has shape (24, 8)"]),
    "images of 2 channels": (_with(x_test=np.zeros((12, 8, 8, 2), np.uint8)), ["x_test has shape"]),
    "int32 images": (_with(x_train=np.zeros((24, 8, 8, 3), np.int32)), ["x_train is int32", "uint8"]),
    "NaN pixel": (_with(x_test=np.where(np.eye(8, dtype=bool)[None, :, :, None], np.nan,
                                        np.zeros((12, 8, 8, 3), np.float32))), ["NaN"]),
    "0-255 floats": (_with(x_train=np.full((24, 8, 8, 3), 200.0, np.float32)), ["[0, 1]", "uint8"]),
    "label count": (_with(y_train=np.zeros(5, np.int64)), ["y_train has shape (5,)"]),
    "one-hot labels": (_with(y_test=np.eye(3)[np.repeat(np.arange(3), 4)]), ["one-hot", "argmax"]),
    "negative label": (_with(y_train=np.full((24, 1), -1)), ["label -1"]),
    "label beyond the names": (_with(label_names=np.array(["a", "b"])), ["label_names names 2 classes"]),
    "string labels": (_with(y_test=np.array(["a"] * 12)), ["y_test is <U1"]),
    "split shapes differ": (_with(x_test=np.zeros((12, 4, 4, 3), np.uint8)), ["both splits"]),
    "class missing in test": (_with(y_test=np.zeros((12, 1), np.int64)), ["has 8 training images and no test"]),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_a_bad_archive_is_one_line_naming_the_problem(tmp_path, case):
    content, fragments = _BAD[case]
    path = save(tmp_path, content)
    with pytest.raises(DatasetError) as caught:
        load(path, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    if case != "class missing in test":  # that one is a rule of load_dataset (--allow_missing_classes), not the file's
        assert not (tmp_path / "tfds").exists()  # nothing cached from a refused archive


@pytest.mark.parametrize("case", ["not an npz", "truncated", "missing file", "a folder"])
def test_an_unreadable_archive_is_one_line(tmp_path, case):
    path = tmp_path / "data.npz"
    if case == "not an npz":
        path.write_text("x_train,y_train\n1,2\n")
    elif case == "truncated":
        np.savez_compressed(path, **arrays())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "a folder":
        path.mkdir()
    with pytest.raises(DatasetError) as caught:
        load(path, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert ("does not exist" if case == "missing file" else "is a folder" if case == "a folder"
            else "not a readable NumPy .npz archive") in message


def test_npz_names_a_file():
    with pytest.raises(DatasetError, match="names no file"):
        DataConfig(dataset="npz:")
    assert DataConfig(dataset="npz:rel/x.npz").dataset == "npz:" + os.path.abspath("rel/x.npz")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated", "NaN pixel", "missing key", "class missing in test"])
def test_a_bad_archive_through_run_py_is_exit_2_and_writes_nothing(tmp_path, case):
    if case == "truncated":
        path = tmp_path / "data.npz"
        np.savez_compressed(path, **arrays())
        path.write_bytes(path.read_bytes()[:300])
    else:
        path = save(tmp_path, {"NaN pixel": _BAD["NaN pixel"][0], "missing key": _without("x_test"),
                               "class missing in test": _BAD["class missing in test"][0]}[case])
    result = run_py("--mode", "train", "--defense", "none", "--dataset", f"npz:{path}", "--data_dir",
                    str(tmp_path / "tfds"), "--run_dir", str(tmp_path / "run"))
    assert_one_line_error(result, str(path))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_smoke_training_on_an_archive_records_the_file_and_its_sha256(tmp_path):
    path = save(tmp_path, arrays(classes=4, train_per_class=64, test_per_class=16, size=16))
    result = run_py("--mode", "train", "--defense", "pgn", "--preset", "smoke", "--dataset", f"npz:{path}",
                    "--data_dir", str(tmp_path / "tfds"), "--run_dir", str(tmp_path / "run"), "--train_limit", "128",
                    "--test_limit", "32", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["dataset"]["name"] == f"npz:{path}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() in record["dataset"]["source"]
    assert record["dataset"]["num_classes"] == 4


@pytest.mark.skipif(not CIFAR100.exists(), reason=f"the CIFAR-100 npz copy is not at {CIFAR100} (it exists only "
                    "beside this project's checkout)")
def test_the_shared_cifar100_copy_loads_as_100_balanced_classes(tmp_path):
    ds = load(CIFAR100, tmp_path, test_limit=1000)
    assert ds.num_classes == 100 and ds.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert len(ds.train_labels) == 50000 and np.bincount(ds.test_labels).tolist() == [10] * 100
    assert ds.image_shape == (32, 32, 3)
