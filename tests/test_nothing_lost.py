"""Faults that used to cost a day of training: a damaged checkpoint, a full disk, two writers."""
from __future__ import annotations

import collections
import errno
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_py
from tests.test_training import _configs, _load_h5, _records, _train
from training import lock, rundir, writes
from training.loop import EMA_WEIGHTS_FILE, train

STEPS_PER_EPOCH = 6  # the tiny folder's 96 training images in batches of 16


def _duplicates(run_dir: Path) -> list:
    counts = collections.Counter((r["kind"], r["step"]) for r in rundir.metrics_records(run_dir))
    return [key for key, n in counts.items() if n > 1]


def _truncate(checkpoint_prefix: Path) -> None:
    for shard in checkpoint_prefix.parent.glob(checkpoint_prefix.name + ".data-*"):
        shard.write_bytes(shard.read_bytes()[:100])


def _checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"ckpt-{step}"


# -- 1. resume from the newest readable checkpoint --------------------------------------------

@pytest.mark.slow
def test_a_truncated_latest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(tiny_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=2, max_checkpoints=3)
    _truncate(_checkpoint(run, 12))
    said = []
    result = train(*_configs(tiny_folder, run, epochs=3, max_checkpoints=3), say=said.append)
    assert result.step == 18
    skipped = [line for line in said if "unreadable" in line]
    assert len(skipped) == 1 and "ckpt-12" in skipped[0]
    assert any(line.startswith(f"resuming {run} from step 6") for line in said), said
    assert not any("step 0" in line for line in said)
    assert _duplicates(run) == []
    assert [r["epoch"] for r in _records(run, "epoch_record")] == [1, 2, 3]
    assert (run / "checkpoints" / "unreadable" / "ckpt-12.index").exists()  # set aside, not deleted
    # The resumed run is the run: its weights equal an uninterrupted three-epoch run's.
    _train(tiny_folder, tmp_path / "whole", epochs=3)
    for a, b in zip(_load_h5(run / EMA_WEIGHTS_FILE), _load_h5(tmp_path / "whole" / EMA_WEIGHTS_FILE)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_checkpoint_moved_out_by_hand_leaves_the_run_resuming_from_what_is_there(tiny_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=2)
    aside = tmp_path / "aside"
    aside.mkdir()
    for file in (run / "checkpoints").glob("ckpt-12.*"):
        shutil.move(file, aside / file.name)  # the index file still names ckpt-12
    said = []
    result = train(*_configs(tiny_folder, run, epochs=3), say=said.append)
    assert result.step == 18 and any(f"from step 6" in line for line in said), said
    assert _duplicates(run) == []
    assert [r["kind"] for r in rundir.metrics_records(run)].count("start") == 2


@pytest.mark.slow
def test_with_no_readable_checkpoint_the_run_starts_over_and_says_why(tiny_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=1)
    for step in (6,):
        _truncate(_checkpoint(run, step))
    said = []
    result = train(*_configs(tiny_folder, run, epochs=1), say=said.append)
    assert result.step == 6
    assert any("no checkpoint in" in line and "is readable: starting from step 0" in line for line in said), said
    assert _duplicates(run) == []


@pytest.mark.slow
def test_a_run_stopped_between_its_checkpoint_and_its_epoch_record_measures_the_epoch_again(tiny_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=1)
    records = rundir.metrics_records(run)
    kept = [r for r in records if r["kind"] not in ("epoch_record", "finished", "epoch")]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    said = []
    result = train(*_configs(tiny_folder, run, epochs=2), say=said.append)
    assert result.step == 12
    epochs = _records(run, "epoch_record")
    assert [(r["epoch"], r.get("recovered", False)) for r in epochs] == [(1, True), (2, False)]
    assert any("epoch 1's record was missing" in line for line in said)
    assert _duplicates(run) == []


# -- 2. a full disk is one line, and leaves nothing half-written -------------------------------

def _fail_with_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _ResourceExhaustedError(Exception):
    """What TensorFlow's SaveV2 raises on a full disk (matched by name, as the real one)."""


_ResourceExhaustedError.__name__ = "ResourceExhaustedError"


def _checkpoint_save_that_fills_the_disk(self, checkpoint_number=None, **kwargs):
    temp = Path(self.directory) / f"ckpt-{checkpoint_number}_temp"
    temp.mkdir(parents=True, exist_ok=True)
    (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 1000)
    raise _ResourceExhaustedError(f"{temp}/part-00000-of-00001.data-00000-of-00001.tempstate; "
                                  "No space left on device [Op:SaveV2]")


def _save_weights_that_fills_the_disk(self, path, *args, **kwargs):
    Path(path).write_bytes(b"\x89HDF half")
    raise OSError(errno.ENOSPC, "No space left on device")


def _summary_writer_that_fills_the_disk(*args, **kwargs):
    raise _ResourceExhaustedError("No space left on device [Op:CreateSummaryFileWriter]")


class _FullFile:
    """metrics.jsonl on a full disk: the write takes half the line, then fails."""

    def __init__(self, real):
        self._real = real

    def write(self, text):
        self._real.write(text[: len(text) // 2])
        self._real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real, name)


def _metrics_file_that_fills_the_disk(monkeypatch):
    import training.monitor as monitor
    real_init = monitor.RunLog.__init__
    calls = {"n": 0}

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self._jsonl is not None:
            self._jsonl = _FullFile(self._jsonl)
    monkeypatch.setattr(monitor.RunLog, "__init__", init)
    return calls


def _inject(site: str, monkeypatch):
    import keras
    import tensorflow as tf

    if site == "checkpoint":
        monkeypatch.setattr(tf.train.CheckpointManager, "save", _checkpoint_save_that_fills_the_disk)
    elif site == "ema weights":
        monkeypatch.setattr(keras.Model, "save_weights", _save_weights_that_fills_the_disk)
    elif site == "tensorboard":
        monkeypatch.setattr(tf.summary, "create_file_writer", _summary_writer_that_fills_the_disk)
    elif site == "metrics":
        _metrics_file_that_fills_the_disk(monkeypatch)
    elif site == "kept epoch":
        monkeypatch.setattr(shutil, "copyfile", _fail_with_enospc)
    elif site == "config":
        monkeypatch.setattr(Path, "write_bytes", _fail_with_enospc)
    else:
        raise AssertionError(site)


WRITE_SITES = ["checkpoint", "ema weights", "tensorboard", "metrics", "kept epoch", "config"]


@pytest.mark.slow
@pytest.mark.parametrize("site", WRITE_SITES)
def test_a_full_disk_at_each_training_write_is_one_line_and_leaves_nothing_half_written(
        tiny_folder, tmp_path, monkeypatch, site):
    run = tmp_path / "run"
    if site != "config":
        _train(tiny_folder, run, epochs=1, keep_checkpoints="all")
    before = {"epochs": [r["epoch"] for r in _records(run, "epoch_record")]} if site != "config" else {}
    with monkeypatch.context() as patched:
        _inject(site, patched)
        with pytest.raises(writes.WriteFailed) as failed:
            _train(tiny_folder, run, epochs=2, keep_checkpoints="all")
    message = str(failed.value)
    assert "\n" not in message and "no space left on device" in message and "free space" in message, message
    leftovers = [p for p in tmp_path.rglob("*") if "_temp" in p.name or p.name.startswith("tmp.") or
                 p.name.endswith(".tmp")]
    assert leftovers == []
    if site == "config":
        assert not (run / "config.json").exists()
        return
    # Nothing claims what was not written: no epoch-2 record without its checkpoint and weights.
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no half line
    epochs = [r["epoch"] for r in _records(run, "epoch_record")]
    if 2 in epochs:
        assert (run / "checkpoints" / "ckpt-12.index").exists() and (run / "epochs" / "epoch-002.weights.h5").exists()
    assert epochs[:1] == before["epochs"]
    # Space again, the same command: the run goes on from its last good checkpoint to the end.
    result = _train(tiny_folder, run, epochs=2, keep_checkpoints="all")
    assert result.step == 12
    assert [r["epoch"] for r in _records(run, "epoch_record")] == [1, 2]
    assert _duplicates(run) == []


def test_space_is_checked_before_a_large_write(tmp_path, monkeypatch):
    monkeypatch.setattr(writes, "free_bytes", lambda path: 10_000)
    with pytest.raises(writes.WriteFailed, match=r"not enough space to write the step-6 checkpoint .* needs about "
                                                 r"1\.[0-9] MB, 10 kB free"):
        with writes.guarded(tmp_path, "the step-6 checkpoint", 200_000):
            raise AssertionError("the write must not start")


def test_other_errors_pass_through_the_write_guard(tmp_path):
    with pytest.raises(KeyError):
        with writes.guarded(tmp_path, "x"):
            raise KeyError("not a write failure")


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"this test process may not mount a tmpfs ({done.stderr.strip()[:100] or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave_bytes: int) -> Path:
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))
    return filler


@pytest.mark.slow
def test_a_run_on_a_full_tmpfs_ends_in_one_line_and_resumes_once_space_is_freed(tiny_folder, tmp_path, small_tmpfs):
    run = small_tmpfs / "run"
    args = ("--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"), "--preset", "smoke",
            "--batch_size", "16", "--train_limit", "0", "--test_limit", "0", "--width", "0.125",
            "--defense", "none", "--run_dir", str(run), "--keep_checkpoints", "all")
    first = run_py(*args, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    filler = _fill(small_tmpfs, 300_000)
    full = run_py(*args, "--epochs", "2")
    assert_one_line_error(full, str(small_tmpfs), "space")
    assert not [p for p in small_tmpfs.rglob("*") if "_temp" in p.name or p.name.startswith("tmp.")]
    assert [r["epoch"] for r in _records(run, "epoch_record")] == [1]
    filler.unlink()
    again = run_py(*args, "--epochs", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["epoch"] for r in _records(run, "epoch_record")] == [1, 2]
    assert _duplicates(run) == []


# -- 3. one writer per run directory -----------------------------------------------------------

def test_a_second_holder_of_a_directory_lock_is_refused_with_the_holders_pid(tmp_path):
    with lock.hold(tmp_path / "run", "--run_dir run", "wait"):
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from training import lock\n"
             "try:\n    lock.hold(sys.argv[1], '--run_dir run', 'wait').__enter__()\n"
             "except lock.DirectoryLocked as err:\n    print(err); sys.exit(2)", str(tmp_path / "run")],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        assert child.returncode == 2
        import os
        import socket
        assert f"PID {os.getpid()} on host {socket.gethostname()}" in child.stdout
    assert lock.holder(tmp_path / "run") is None


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time; from training import lock\n"
            "with lock.hold(sys.argv[1], 'x', 'y'):\n    print('held', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "held"
        assert lock.holder(folder) == f"PID {child.pid} on host " + __import__("socket").gethostname()
    finally:
        child.kill()
        child.wait()
    assert lock.holder(folder) is None
    with lock.hold(folder, "x", "y"):
        assert (folder / lock.LOCK_FILE).read_text().startswith(f"PID {__import__('os').getpid()}")


@pytest.mark.slow
def test_two_trainings_started_at_once_on_one_directory_leave_one_run(tiny_folder, tmp_path):
    run = tmp_path / "run"
    args = ("--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"), "--preset", "smoke",
            "--batch_size", "16", "--train_limit", "0", "--test_limit", "0", "--width", "0.125",
            "--defense", "none", "--run_dir", str(run), "--epochs", "2")
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "run.py", *args], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    refused = outs[[p.returncode for p in procs].index(2)][1]
    assert "is in use by PID" in refused and len(refused.strip().splitlines()) == 1, refused
    assert [r["epoch"] for r in _records(run, "epoch_record")] == [1, 2]
    assert [r["kind"] for r in rundir.metrics_records(run)].count("start") == 1
    assert _duplicates(run) == []
    assert len(list((run / "tensorboard").glob("events.*"))) == 1


# -- 4. an evaluation a person can watch and stop ----------------------------------------------

def test_progress_in_a_log_file_is_a_line_per_batch_with_an_eta(monkeypatch):
    import io

    from eval import progress
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    out = io.StringIO()
    bar = progress.Progress(300, "mim on run (300 examples)", out=out)
    for done in (128, 256, 300):
        bar.update(done)
    lines = out.getvalue().splitlines()
    assert lines[0] == "mim on run (300 examples)"
    assert [line.split(" examples")[0].strip() for line in lines[1:]] == ["128/300", "256/300", "300/300"]
    assert all("ETA" in line for line in lines[1:3]) and "ETA" not in lines[3]


def _read_until(stream, needle: str, seen: list) -> None:
    for line in stream:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never printed: {''.join(seen)[-2000:]}")


@pytest.mark.slow
def test_an_evaluation_stops_on_ctrl_c_inside_an_attack_keeps_finished_attacks_and_goes_on(tiny_folder, tmp_path):
    import signal

    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=1)
    # MIM with 10^7 iterations: one batch is a single compiled call that would run for hours.
    command = [sys.executable, "run.py", "--mode", "eval", "--run_dir", str(run), "--attacks", "fgm,mim",
               "--mim_iters", "10000000", "--batch_size", "64"]
    root = Path(__file__).resolve().parents[1]
    for attempt in ("first", "again"):
        proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        try:
            _read_until(proc.stdout, "mim on", seen)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        text = "".join(seen) + out
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err and "stopping the evaluation" in err
        plan = [line for line in text.splitlines() if line.startswith("evaluating 1 run(s) on 24 test images")]
        assert len(plan) == 1 and "at most about" in plan[0], text
        cache = list((run / "eval_cache").glob("*.npz"))
        assert [p.name.split("-")[0] for p in cache] == ["fgm"]  # FGM finished and kept; MIM not
        assert not list((run / "eval_cache").glob("tmp-*"))
        if attempt == "again":  # the same command took FGM from the cache and went on to MIM
            assert "fgm on run: from the cache" in text
            assert "fgm on run (24 examples)" not in text


def test_an_interrupt_that_lands_inside_a_c_call_is_still_a_stop():
    """Ctrl-C inside NumPy's __array__ reaches Python as a SystemError caused by the
    KeyboardInterrupt; the evaluation still stops as from Ctrl-C (exit 130, not a traceback)."""
    from eval.progress import stoppable

    def convert():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in method __array__> returned a result with an exception set") from interrupt

    with pytest.raises(KeyboardInterrupt):
        with stoppable():
            convert()
    with pytest.raises(SystemError):  # any other SystemError is left as it is
        with stoppable():
            raise SystemError("not an interrupt")


# -- 5. data and models that cannot mean what the user thinks ----------------------------------

def test_a_class_with_training_images_but_no_test_images_is_named_and_refused(tmp_path):
    import data
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "folder", classes=3, per_class_train=4, per_class_test=2, size=8)
    shutil.rmtree(folder / "test" / "class2")
    (folder / "test" / "class2").mkdir()
    cfg = data.DataConfig(dataset=f"folder:{folder}", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DatasetError, match=r"class 'class2' .* has 4 training images and no test images: "
                                                r"accuracy would be over 2 of 3 classes.*--allow_missing_classes"):
        data.load_dataset(cfg)
    allowed = data.load_dataset(data.DataConfig(dataset=f"folder:{folder}", data_dir=str(tmp_path / "tfds"),
                                                allow_missing_classes=True))
    assert allowed.num_classes == 3 and 2 not in set(allowed.test_labels)


def test_a_width_that_leaves_a_layer_under_eight_filters_is_named(tiny_folder, tmp_path):
    said = []
    train(*_configs(tiny_folder, tmp_path / "run", epochs=1, width=0.01, stop_after_steps=1), say=said.append)
    warnings = [line for line in said if line.startswith("warning: --width 0.01")]
    assert len(warnings) == 1 and "1 filter(s)" in warnings[0]
    said.clear()
    train(*_configs(tiny_folder, tmp_path / "ok", epochs=1, width=0.125, stop_after_steps=1), say=said.append)
    assert not [line for line in said if line.startswith("warning: --width")]


def test_minimum_norm_plots_span_zero_to_the_benign_accuracy(tmp_path):
    import matplotlib.image
    from matplotlib import pyplot

    from eval import evaluate_results
    budgets = np.linspace(0, 1, 50).tolist()
    results = {"protocol": {"dataset": "d", "n": 200},
               "runs": {"weak": {"benign_accuracy": 0.19, "budget_curves": {
                   "cw": {"budgets": budgets, "accuracy": [0.19] * 10 + [0.185] * 40}}}}}
    captured = {}
    real_close = pyplot.close

    def close(fig):
        captured["ylim"] = fig.axes[0].get_ylim()
        real_close(fig)
    pyplot.close = close
    try:
        paths = evaluate_results.plot_budget_curves(results, tmp_path)
    finally:
        pyplot.close = real_close
    assert [Path(p).name for p in paths] == ["accuracy_vs_l2_cw.png"]
    assert matplotlib.image.imread(paths[0]).ndim == 3
    low, high = captured["ylim"]
    assert low == 0.0 and 0.19 <= high <= 0.2


def _eval_site(site: str, monkeypatch):
    import matplotlib.figure

    from eval import suite
    if site == "attack cache":
        real = np.savez

        def savez(file, **arrays):  # half a file, then a full disk
            if hasattr(file, "write"):  # eval/cache.py writes through a file object
                file.write(b"PK half")
            else:
                Path(str(file) if str(file).endswith(".npz") else f"{file}.npz").write_bytes(b"PK half")
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(suite.np, "savez", savez)
        return real
    if site == "results":
        monkeypatch.setattr(Path, "write_bytes", _fail_with_enospc)
    elif site == "plot":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _fail_with_enospc)
    else:
        raise AssertionError(site)


@pytest.mark.slow
@pytest.mark.parametrize("site", ["attack cache", "results", "plot"])
def test_a_full_disk_at_each_evaluation_write_is_one_line_and_the_same_command_goes_on(
        tiny_folder, tmp_path, monkeypatch, site):
    from eval.config import EvalConfig
    from eval.evaluate import evaluate

    run = tmp_path / "run"
    _train(tiny_folder, run, epochs=1)
    cfg = EvalConfig(run_dirs=(str(run),), attacks=("fgm", "deepfool"), deepfool_iters=5, masking_iters=3,
                     batch_size=64)
    with monkeypatch.context() as patched:
        _eval_site(site, patched)
        with pytest.raises(writes.WriteFailed) as failed:
            evaluate(cfg, say=lambda *_: None)
    assert "\n" not in str(failed.value) and "no space left on device" in str(failed.value)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith("tmp") or p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (run / "eval" / "results.json").exists()
    cached_before = sorted(p.name for p in (run / "eval_cache").glob("*.npz")) if (run / "eval_cache").exists() else []
    results = evaluate(cfg, say=lambda *_: None)
    assert set(results["runs"]["run"]["attacks"]) == {"fgm", "deepfool"}
    assert (run / "eval" / "results.json").exists()
    assert set(cached_before) <= {p.name for p in (run / "eval_cache").glob("*.npz")}
