"""Tests for data/: sources, decoded cache, subsets and the tf.data pipelines.

Everything runs on tiny image folders built here, tfds's mock data, or
synthetic arrays; one test reads the shared CIFAR-10 JPEG copy and skips when
it is absent. Nothing here needs the internet.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data
from data import DataConfig, DatasetError, load_dataset, sources
from data.subsets import balanced_subset

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"
CLASSES = ("cat", "dog", "emu")  # deliberately sorted: class id = position


def _write_folder(root: Path, per_class: dict[str, int], size: int = 32,
                  seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random RGB PNGs (lossless, so decoded pixels can be compared exactly)."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in per_class.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
                written.setdefault(f"{split}/{name}", []).append(pixels)
    return written


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    written = _write_folder(root, {"train": 8, "test": 4})
    return root, written


def _folder_cfg(root: Path, tmp_path: Path, **kwargs) -> DataConfig:
    return DataConfig(dataset=f"folder:{root}", data_dir=str(tmp_path / "tfds"), **kwargs)


# ------------------------------------------------------------------------ sources


def test_folder_loads_exact_pixels_and_sorted_classes(folder, tmp_path):
    root, written = folder
    ds = load_dataset(_folder_cfg(root, tmp_path))
    assert ds.name == f"folder:{root}"
    assert ds.class_names == CLASSES and ds.num_classes == 3
    assert ds.image_shape == (32, 32, 3)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert len(ds.train_labels) == 24 and len(ds.test_labels) == 12
    for split in ("train", "test"):
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        for image, label in zip(images, labels):
            originals = written[f"{split}/{CLASSES[label]}"]
            assert any(np.array_equal(image, o) for o in originals)
    json.dumps(ds.info())  # must be JSON-able for config.json


def test_decoded_cache_is_reused_and_invalidated(folder, tmp_path, monkeypatch):
    root, _ = folder
    first = load_dataset(_folder_cfg(root, tmp_path))
    assert len(list((tmp_path / "tfds" / "decoded_cache").glob("*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(sources, "_decode_folder", no_decoding)
    second = load_dataset(_folder_cfg(root, tmp_path))
    np.testing.assert_array_equal(first.train_images, second.train_images)
    assert second.source == first.source
    # A new file changes the fingerprint, so the folder must be decoded again.
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(_folder_cfg(root, tmp_path))


def test_folder_with_mixed_image_sizes_names_the_odd_file(folder, tmp_path):
    root, _ = folder
    Image.fromarray(np.ones((16, 16, 3), np.uint8)).save(root / "train" / "dog" / "small.png")
    with pytest.raises(DatasetError, match=r"small\.png.* share one size"):
        load_dataset(_folder_cfg(root, tmp_path))


def test_folder_errors_name_what_is_missing(folder, tmp_path):
    root, _ = folder
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(_folder_cfg(tmp_path / "nowhere", tmp_path))
    for child in (root / "test").rglob("*.png"):
        child.unlink()
    with pytest.raises(DatasetError, match=r"test/ holds no .*images"):
        load_dataset(_folder_cfg(root, tmp_path))
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir()
    (root / "test").rmdir()
    with pytest.raises(DatasetError, match=r"has no test/ subfolder"):
        load_dataset(_folder_cfg(root, tmp_path))


def test_unknown_dataset_and_bad_config_values():
    with pytest.raises(DatasetError, match=r"unknown dataset 'imagenet'.*cifar10.*folder:PATH"):
        load_dataset(DataConfig(dataset="imagenet"))
    with pytest.raises(DatasetError, match="train_limit"):
        DataConfig(train_limit=-1)
    with pytest.raises(DatasetError, match="augment"):
        DataConfig(augment="mirror")


def test_offline_tfds_dataset_fails_fast_with_a_fix(tmp_path, monkeypatch):
    # Fast means no retry loop: offline, tfds's own download retries for minutes. The network is
    # refused here and every attempt counted: one probe at most, and tfds's download never starts.
    lookups, downloads = [], []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise OSError("no network in this test")

    monkeypatch.setattr(sources.socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *args, **kwargs: downloads.append(self.name))
    with pytest.raises(DatasetError) as err:
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert len(lookups) <= 1 and downloads == []
    message = str(err.value)
    assert "\n" not in message
    assert f"'cifar10' is not prepared in {tmp_path}" in message
    assert "no internet" in message and "--data_dir" in message and "folder:PATH" in message


def test_hanging_dns_counts_as_offline_after_the_timeout(monkeypatch):
    # The probe gives up on a resolver that does not answer instead of waiting for it: it returns
    # while the lookup is still blocked (an event, not a clock, says so).
    entered, release, answered = threading.Event(), threading.Event(), threading.Event()

    def hang(*args, **kwargs):
        entered.set()
        release.wait(600)
        answered.set()
        raise OSError("the resolver answered at last")

    monkeypatch.setattr(sources.socket, "getaddrinfo", hang)
    try:
        assert not sources._host_reachable("example.invalid", 443, timeout_s=0.5)
        assert entered.wait(600)  # the lookup did start (under load, perhaps only after the timeout)
        assert not answered.is_set()
    finally:
        release.set()  # let the abandoned resolver thread finish


def test_manual_archive_is_used_without_network(tmp_path, monkeypatch):
    """A (fake) cifar-10-binary.tar.gz in downloads/manual/ is read instead of
    downloading; tfds rejects its checksum, which must come back as one line."""
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    with tarfile.open(manual / "cifar-10-binary.tar.gz", "w:gz") as archive:
        payload = b"not cifar"
        entry = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        entry.size = len(payload)
        archive.addfile(entry, io.BytesIO(payload))
    monkeypatch.setattr(sources, "_host_reachable",
                        lambda *a, **k: pytest.fail("the manual archive path must not go online"))
    with pytest.raises(DatasetError) as err:
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert "\n" not in str(err.value)
    assert "NonMatchingChecksumError" in str(err.value) and "downloads/manual" in str(err.value)


def test_tfds_source_through_mock_data(tmp_path, monkeypatch):
    # mock_data replaces download_and_prepare and as_dataset; pretend to be online
    # so the loader takes its download path.
    monkeypatch.setattr(sources, "_host_reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=40):
        ds = load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path), test_limit=20))
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
    assert len(ds.train_labels) == 40 and len(ds.test_labels) == 20
    assert ds.train_labels.dtype == np.int32
    assert ds.source.startswith("tfds mnist:")
    assert list((tmp_path / "decoded_cache").glob("mnist-*.npz"))


# ------------------------------------------------------------------------ subsets


def test_balanced_subset_is_deterministic_balanced_and_nested():
    rng = np.random.default_rng(7)
    labels = rng.choice(4, size=500, p=[0.1, 0.2, 0.3, 0.4]).astype(np.int32)
    small = balanced_subset(labels, 30, 4, split="train")
    large = balanced_subset(labels, 120, 4, split="train")
    np.testing.assert_array_equal(small, balanced_subset(labels, 30, 4, split="train"))
    assert np.all(np.diff(small) > 0)  # sorted, no repeats
    counts = np.bincount(labels[small], minlength=4)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 1
    assert set(small) <= set(large)
    # Class 0 has ~50 examples: it gives all it has, the others share the rest evenly.
    big = balanced_subset(labels, 400, 4, split="train")
    counts = np.bincount(labels[big], minlength=4)
    short = np.bincount(labels, minlength=4) == counts
    assert counts.sum() == 400 and np.ptp(counts[~short]) <= 1
    with pytest.raises(DatasetError, match="train_limit=501"):
        balanced_subset(labels, 501, 4, split="train")


def test_limits_through_load_dataset(folder, tmp_path):
    root, _ = folder
    cfg = _folder_cfg(root, tmp_path, train_limit=7, test_limit=6)
    ds = load_dataset(cfg)
    assert sorted(np.bincount(ds.train_labels)) == [2, 2, 3]
    assert list(np.bincount(ds.test_labels)) == [2, 2, 2]
    again = load_dataset(cfg)
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    with pytest.raises(DatasetError, match="test_limit=13"):
        load_dataset(_folder_cfg(root, tmp_path, test_limit=13))


# ----------------------------------------------------------------------- pipeline


def _synthetic(n=64, size=12):
    """Images with no zero pixel (so zero padding is visible); label = index."""
    rng = np.random.default_rng(3)
    images = rng.integers(1, 256, (n, size, size, 3), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int32)


def _epoch(images, labels, **kwargs):
    batches = list(data.train_batches(images, labels, **kwargs).as_numpy_iterator())
    return [b[0] for b in batches], [b[1] for b in batches]


def _shifted(image, dy, dx):
    pad = data.pipeline.SHIFT_PAD_PX
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    h, w, _ = image.shape
    return padded[pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _explain(out, image):
    """(flipped, dy, dx) such that out is image shifted (and maybe mirrored), else None."""
    pad = data.pipeline.SHIFT_PAD_PX
    for flipped, source in ((False, image), (True, image[:, ::-1])):
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.array_equal(out, _shifted(source, dy, dx)):
                    return flipped, dy, dx
    return None


def test_train_batches_types_shapes_and_unaugmented_values():
    images, labels = _synthetic(n=70)
    xs, ys = _epoch(images, labels, batch_size=16, seed=1, epoch=0, augment="none")
    assert len(xs) == data.steps_per_epoch(70, 16) == 4  # remainder dropped
    ds = data.train_batches(images, labels, batch_size=16, seed=1, epoch=0, augment="none")
    assert ds.element_spec[0].shape.as_list() == [16, 12, 12, 3]  # static batch shape
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert len(set(y)) == 64  # a permutation: no example twice
    np.testing.assert_array_equal(x, images[y].astype(np.float32) / 255.0)


def test_same_seed_and_epoch_give_identical_batches():
    images, labels = _synthetic()
    args = dict(batch_size=8, augment="flip_shift")
    xs1, ys1 = _epoch(images, labels, seed=5, epoch=2, **args)
    xs2, ys2 = _epoch(images, labels, seed=5, epoch=2, **args)
    np.testing.assert_array_equal(np.concatenate(xs1), np.concatenate(xs2))
    np.testing.assert_array_equal(np.concatenate(ys1), np.concatenate(ys2))
    _, ys3 = _epoch(images, labels, seed=5, epoch=3, **args)
    _, ys4 = _epoch(images, labels, seed=6, epoch=2, **args)
    assert not np.array_equal(np.concatenate(ys1), np.concatenate(ys3))
    assert not np.array_equal(np.concatenate(ys1), np.concatenate(ys4))


def test_skip_batches_resumes_the_same_epoch():
    images, labels = _synthetic()
    args = dict(batch_size=8, seed=3, epoch=1, augment="flip_shift")
    xs, ys = _epoch(images, labels, **args)
    xs_tail, ys_tail = _epoch(images, labels, skip_batches=3, **args)
    assert len(xs_tail) == len(xs) - 3
    for full, tail in zip(xs[3:] + ys[3:], xs_tail + ys_tail):
        np.testing.assert_array_equal(full, tail)
    assert _epoch(images, labels, skip_batches=len(xs), **args) == ([], [])
    with pytest.raises(DatasetError, match="skip_batches"):
        data.train_batches(images, labels, skip_batches=len(xs) + 1, **args)


@pytest.mark.parametrize("augment", ["shift", "flip_shift"])
def test_augmentation_is_a_shift_with_zero_fill_and_maybe_a_mirror(augment):
    images, labels = _synthetic(n=128)
    xs, ys = _epoch(images, labels, batch_size=64, seed=0, epoch=0, augment=augment)
    found = []
    for x, y in zip(np.concatenate(xs), np.concatenate(ys)):
        out = np.round(x * 255).astype(np.uint8)
        explanation = _explain(out, images[y])
        assert explanation is not None, "output is not a shifted (mirrored) input"
        found.append(explanation)
    flipped = np.array([f for f, _, _ in found])
    shifts = np.array([(dy, dx) for _, dy, dx in found])
    assert np.abs(shifts).max() == 4 and np.mean(np.all(shifts == 0, axis=1)) < 0.1
    if augment == "shift":
        assert not flipped.any()  # digits must never be mirrored
    else:
        assert 0.3 < flipped.mean() < 0.7


def test_test_batches_keep_order_and_remainder():
    images, labels = _synthetic(n=21)
    batches = list(data.test_batches(images, labels, batch_size=8).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [8, 8, 5]
    x = np.concatenate([b[0] for b in batches])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, images.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)


def test_steps_and_augment_resolution():
    assert data.steps_per_epoch(10, 3) == 3
    with pytest.raises(DatasetError, match="no full batch"):
        data.steps_per_epoch(5, 8)
    assert data.resolve_augment("auto", "cifar10") == "flip_shift"
    assert data.resolve_augment("auto", "folder:/x") == "flip_shift"
    assert data.resolve_augment("auto", "svhn_cropped") == "shift"
    assert data.resolve_augment("auto", "mnist") == "shift"
    assert data.resolve_augment("none", "cifar10") == "none"
    with pytest.raises(DatasetError, match="resolve_augment"):
        data.train_batches(*_synthetic(), batch_size=8, seed=0, epoch=0, augment="auto")


# ---------------------------------------------------------------------- real data


@pytest.mark.slow
def test_shared_cifar10_jpeg_copy():
    """Reads ../shared/data/cifar10-jpeg. The decoded cache goes to the default
    ~/tensorflow_datasets/decoded_cache, so only the first run ever pays the
    ~10 s decode, and training runs on the same folder reuse it."""
    if not SHARED_CIFAR10.is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {SHARED_CIFAR10} "
                    "(only present on the development machines)")
    ds = load_dataset(DataConfig(dataset=f"folder:{SHARED_CIFAR10}", train_limit=1000,
                                 test_limit=500))
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10
    assert ds.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog",
                              "frog", "horse", "ship", "truck")
    assert ds.train_images.shape == (1000, 32, 32, 3)
    assert ds.test_images.shape == (500, 32, 32, 3)
    assert list(np.bincount(ds.train_labels)) == [100] * 10
    assert list(np.bincount(ds.test_labels)) == [50] * 10
    assert "60000 files" in ds.source


def test_the_pipelines_run_without_tf_datas_autotuner():
    """With the autotuner on, deleting an epoch's iterator waits for its thread (up to its 60 s
    optimisation period under CPU contention): the pipelines fix their parallelism instead."""
    images, labels = _synthetic(32)
    for ds in (data.train_batches(images, labels, batch_size=8, seed=0, epoch=0, augment="flip_shift"),
               data.test_batches(images, labels, batch_size=8)):
        assert ds.options().autotune.enabled is False
