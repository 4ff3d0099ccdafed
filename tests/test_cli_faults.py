"""File-system faults and nonsense numbers on the command line: one line, exit code 2, nothing lost."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, run_py
from training import rundir


@contextlib.contextmanager
def unwritable(path: Path):
    """``path`` (and, for a folder, everything under it) made unwritable: by permissions for an
    ordinary user, by the immutable attribute for root (whom permissions do not stop)."""
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    done = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make {path} unwritable as root here (chattr: {done.stderr.strip()[:80]})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _smoke(tiny_folder, tmp_path, run_dir, *more):
    return run_py("--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"), "--preset", "smoke",
                  "--batch_size", "32", "--train_limit", "0", "--test_limit", "0", "--defense", "none",
                  "--run_dir", str(run_dir), *more)


@pytest.mark.parametrize("flag, value", [("--eps", "nan"), ("--eps", "inf"), ("--lr", "-inf"), ("--c_l", "nan")])
def test_a_non_finite_number_is_refused_before_anything_is_written(tmp_path, flag, value):
    result = run_py(flag, value, "--run_dir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "tfds"))
    assert_one_line_error(result, flag, "finite")
    assert not (tmp_path / "run").exists()


def test_a_non_finite_sweep_value_is_refused(tmp_path):
    result = run_py("--mode", "sweep", "--defense", "fgm", "--sweep", "eps=0.5,nan", "--root", str(tmp_path / "root"))
    assert_one_line_error(result, "--sweep eps", "finite")
    assert not (tmp_path / "root").exists()


@pytest.mark.slow
def test_a_run_dir_that_is_a_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    assert_one_line_error(run_py("--run_dir", str(target), "--data_dir", str(tmp_path / "tfds")),
                          str(target), "is a file")
    assert target.read_text() == "my notes"


@pytest.mark.slow
def test_a_run_dir_under_an_unwritable_folder_is_refused_before_training(tiny_folder, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    with unwritable(parent):
        result = _smoke(tiny_folder, tmp_path, parent / "run")
    assert_one_line_error(result, "cannot be created", "not writable")
    assert not (parent / "run").exists()


@pytest.mark.slow
def test_resuming_in_a_read_only_run_dir_is_refused_before_an_epoch_is_trained(tiny_folder, tmp_path):
    run = tmp_path / "run"
    first = _smoke(tiny_folder, tmp_path, run, "--epochs", "2", "--stop_after_steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    before = _listing(run)
    with unwritable(run):
        result = _smoke(tiny_folder, tmp_path, run, "--epochs", "2")
    assert_one_line_error(result, str(run), "not writable")
    assert _listing(run) == before  # no epoch trained, no record logged twice afterwards


@pytest.mark.slow
def test_a_truncated_config_is_called_truncated_not_foreign(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"created": "2026-12-01", "settings": {"train.lr": 0.0')
    result = run_py("--run_dir", str(run), "--data_dir", str(tmp_path / "tfds"))
    assert_one_line_error(result, "config.json", "not valid JSON (truncated")
    assert "not written by this tool" not in result.stderr
    with pytest.raises(rundir.RunDirError, match="not written by this tool"):
        (run / "config.json").write_text('{"something": "else"}')
        rundir.read_config(run / "config.json", "fix")


def test_json_written_by_the_tool_is_strict(tmp_path):
    rundir.write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2.5})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2.5}
