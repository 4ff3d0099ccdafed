"""tf.distribute: every defense's step under MirroredStrategy (2 logical CPUs) equals the default
strategy's on the same global batch; checkpoints move between strategies; two local workers
train PGN with MultiWorkerMirroredStrategy."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ROOT, assert_one_line_error, run_py
from training import distribute

DEFENSES = ("none", "fgm", "pgd", "pgn", "l2l", "rvs")


@pytest.mark.slow
def test_each_defense_steps_the_same_under_mirrored_and_default_strategies():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tests.distributed_equivalence", *DEFENSES], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["defense"]: r for r in map(json.loads, (l for l in result.stdout.splitlines() if l.startswith("{")))}
    assert set(rows) == set(DEFENSES)
    for name, row in rows.items():
        assert row["replicas"] == 2
        assert row["loss_mirrored"] == pytest.approx(row["loss_default"], rel=1e-5), name
        # the weights moved, and both strategies moved them to the same place, up to float32
        # rounding of the moves (PGN's generator moves by ~17 at this learning rate)
        assert row["max_weight_change"] > 1e-3, name
        assert row["max_weight_difference"] < 1e-5 * max(1.0, row["max_weight_change"]), name


def _pgn_args(folder: Path, run_dir: Path, strategy: str) -> list[str]:
    return ["--mode", "train", "--defense", "pgn", "--preset", "smoke", "--dataset", f"folder:{folder}",
            "--batch_size", "16", "--train_limit", "0", "--test_limit", "0", "--width", "0.125",
            "--gen_width", "0.125", "--monitor_size", "16", "--checkpoint_every_minutes", "0",
            "--run_dir", str(run_dir), "--strategy", strategy]


def _train(folder, run_dir, *extra, strategy="default"):
    return run_py(*_pgn_args(folder, run_dir, strategy), *extra)


def _starts(run_dir: Path) -> list[int]:
    events = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [e["step"] for e in events if e["kind"] == "start"]


@pytest.mark.slow
def test_checkpoints_move_between_strategies(tiny_folder, tmp_path):
    run_dir = tmp_path / "run"
    first = _train(tiny_folder, run_dir, "--stop_after_steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    mirrored = _train(tiny_folder, run_dir, strategy="mirrored")  # resumes the default strategy's checkpoint
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    assert "resuming" in mirrored.stdout and "finished at step 6/6" in mirrored.stdout
    longer = _train(tiny_folder, run_dir, "--epochs", "2")  # and the default strategy resumes the mirrored one's
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "finished at step 12/12" in longer.stdout
    assert _starts(run_dir) == [0, 2, 6]


def test_strategy_errors_are_one_line(tiny_folder, tmp_path, monkeypatch):
    assert_one_line_error(_train(tiny_folder, tmp_path / "odd", "--batch_size", "15", strategy="mirrored"),
                          "multiple of 2")
    assert not (tmp_path / "odd").exists()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.StrategyError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_local_workers_train_pgn(tiny_folder, tmp_path):
    run_dir = tmp_path / "run"
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), TF_CONFIG=json.dumps(tf_config))
        args = _pgn_args(tiny_folder, run_dir, "multi_worker")
        processes.append(subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "finished at step 6/6" in out
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("start") == 1  # only the chief writes the run directory
    assert any(e["kind"] == "finished" for e in events)
    assert not list(run_dir.glob("workertemp_*"))  # the other worker's checkpoints are cleaned up
    # both workers hold the same averaged weights: the same epoch summary but for its time
    summaries = [line.rsplit(",", 1)[0] for out, _ in outputs for line in out.splitlines() if line.startswith("epoch 1:")]
    assert len(summaries) == 2 and summaries[0] == summaries[1]
