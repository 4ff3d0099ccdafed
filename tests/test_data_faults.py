"""Faults and the decoded cache of image folders: a corrupt JPEG is one line naming the file; the
cache key resolves symlinks, the first write says where and how big, --cache_dir moves it and is
not part of a run's settings."""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import DataConfig, DatasetError, load_dataset, sources
from tests.conftest import write_image_folder
from tests.test_cli import assert_one_line_error, run_py
from training.rundir import flatten_settings, setting_defaults


def _jpeg_bytes(size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 120, np.uint8)).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


@pytest.fixture
def small_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images", classes=2, per_class_train=4, per_class_test=2)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("content", ["truncated", "garbage"])
def test_a_corrupt_jpeg_is_one_line_naming_the_file_without_tensorflow_or_libjpeg_text(
        small_folder, tmp_path, capfd, content):
    bad = small_folder / "test" / "class1" / "broken.jpg"
    bad.write_bytes(_jpeg_bytes()[:200] if content == "truncated" else b"not an image" * 20)
    capfd.readouterr()
    with pytest.raises(DatasetError) as caught:
        load_dataset(DataConfig(dataset=f"folder:{small_folder}", data_dir=str(tmp_path / "tfds")))
    message = str(caught.value)
    assert type(caught.value).__name__ == "CorruptImageError"
    assert str(bad) in message and "remove it or replace it" in message and "\n" not in message
    assert "{{function_node" not in message and "Iterator" not in message
    assert caught.value.__cause__ is None  # a chained TensorFlow error would print its graph text
    assert "JPEG library" not in capfd.readouterr().err  # libjpeg's "Improper call ... in state 201"
    assert not (tmp_path / "tfds").exists()  # no cache written


@pytest.mark.slow
def test_a_corrupt_jpeg_through_run_py_is_exit_2_and_one_line(small_folder, tmp_path):
    bad = small_folder / "train" / "class0" / "zz-broken.jpg"  # not the first image: the batched path
    bad.write_bytes(_jpeg_bytes()[:200])
    before = _listing(tmp_path)
    result = run_py("--dataset", f"folder:{small_folder}", "--data_dir", str(tmp_path / "tfds"),
                    "--defense", "none", "--run_dir", str(tmp_path / "run"))
    assert_one_line_error(result, str(bad), "remove it or replace it")
    assert "{{function_node" not in result.stderr and "JPEG library" not in result.stderr
    assert _listing(tmp_path) == before  # no run directory, no cache


def test_the_cache_key_resolves_symlinks_and_the_first_write_says_where(small_folder, tmp_path, capsys,
                                                                        monkeypatch):
    link = tmp_path / "link"
    os.symlink(small_folder, link)
    cfg = DataConfig(dataset=f"folder:{small_folder}", data_dir=str(tmp_path / "tfds"))
    first = load_dataset(cfg)
    written = list((tmp_path / "tfds" / "decoded_cache").glob("*.npz"))
    assert len(written) == 1
    line = [out for out in capsys.readouterr().out.splitlines() if "cached in" in out]
    assert len(line) == 1 and str(written[0]) in line[0] and " MB" in line[0] and "--cache_dir" in line[0]

    def no_decoding(root):
        raise AssertionError("decoded again although the same folder is cached")

    monkeypatch.setattr(sources, "_decode_folder", no_decoding)
    through_link = load_dataset(dataclasses.replace(cfg, dataset=f"folder:{link}"))
    np.testing.assert_array_equal(first.train_images, through_link.train_images)
    assert through_link.name == f"folder:{link}" and str(link) in through_link.source
    assert list((tmp_path / "tfds" / "decoded_cache").glob("*.npz")) == written
    assert "cached in" not in capsys.readouterr().out  # said once, when written


def test_cache_dir_chooses_the_place_and_is_not_a_setting(small_folder, tmp_path):
    cfg = DataConfig(dataset=f"folder:{small_folder}", data_dir=str(tmp_path / "tfds"),
                     cache_dir=str(tmp_path / "elsewhere"))
    load_dataset(cfg)
    assert len(list((tmp_path / "elsewhere").glob("*.npz"))) == 1 and not (tmp_path / "tfds").exists()
    assert dataclasses.replace(cfg, test_limit=4).cache_dir == str(tmp_path / "elsewhere")
    plain = dataclasses.replace(cfg, cache_dir=None)
    assert flatten_settings(data=cfg) == flatten_settings(data=plain)  # resuming compares these
    assert not any("cache" in key for key in flatten_settings(data=cfg))
    assert not any("cache" in key for key in setting_defaults(data=DataConfig))
    assert cfg == plain


@pytest.mark.slow
def test_a_run_resumes_with_another_cache_dir(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=2, per_class_train=8, per_class_test=4, size=8)
    common = ["--dataset", f"folder:{folder}", "--defense", "none", "--width", "0.125", "--batch_size", "8",
              "--monitor_size", "8", "--run_dir", str(tmp_path / "run")]
    first = run_py(*common, "--epochs", "1", "--cache_dir", str(tmp_path / "cache_a"))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "cached in " + str(tmp_path / "cache_a") in first.stdout
    again = run_py(*common, "--epochs", "2", "--cache_dir", str(tmp_path / "cache_b"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout and list((tmp_path / "cache_b").glob("*.npz"))
