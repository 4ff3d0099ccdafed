"""run.py as a user meets it: bad input gets one line and exit code 2; smoke runs end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(*args, cwd=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--mode", "fly"], ["--mode", "train"]),
    (["--defense", "magic"], ["--defense", "pgd"]),
    (["--preset", "huge"], ["--preset", "smoke"]),
    (["--eps", "-0.1"], ["--eps", ">= 0"]),
    (["--dataset", "imagenet22k"], ["imagenet22k", "folder:PATH"]),
    (["--dataset", "folder:/no/such/place"], ["/no/such/place"]),
])
def test_bad_input_is_one_line_and_exit_code_2_and_writes_nothing(tmp_path, args, fragments):
    result = run_py(*args, "--run_dir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "tfds"))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


# run.py with the network refused, each attempt (a name lookup or a connection) counted in a file.
OFFLINE_RUN_PY = """
import runpy, socket, sys
log = open(sys.argv.pop(1), "a")

def refuse(host, *args, **kwargs):
    log.write(f"{host}\\n")
    log.flush()
    raise OSError("no network in this test")

socket.getaddrinfo = refuse
socket.create_connection = lambda address, *args, **kwargs: refuse(address[0])
sys.argv[0] = sys.argv.pop(1)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_offline_cifar10_without_a_copy_fails_fast_naming_both_fixes(tmp_path):
    # Fast means no retry loop: tfds alone retries the network for minutes before it gives up.
    # One probe of the download host at most, then the error (counted, not timed).
    attempts = tmp_path / "network_attempts.txt"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", OFFLINE_RUN_PY, str(attempts), str(ROOT / "run.py"),
                             "--dataset", "cifar10", "--data_dir", str(tmp_path / "empty"),
                             "--run_dir", str(tmp_path / "run")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "cifar10", "--data_dir", "folder:", "no internet")
    assert len(attempts.read_text().splitlines() if attempts.exists() else []) <= 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_dir_with_other_settings_is_refused_and_left_as_it_was(tiny_folder, tmp_path):
    common = ["--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"), "--preset", "smoke",
              "--batch_size", "32", "--train_limit", "0", "--test_limit", "0", "--run_dir", str(tmp_path / "run")]
    assert run_py(*common, "--defense", "none", "--epochs", "2").returncode == 0
    listing = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    shorter = run_py(*common, "--defense", "none", "--epochs", "1")
    assert shorter.returncode == 0 and "nothing to train" in shorter.stdout and "past the 3 steps" in shorter.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())  # the run now says what was asked of it
    assert config["settings"]["train.epochs"] == 1 and config["changes"][-1]["train.epochs"] == [2, 1]
    assert_one_line_error(run_py(*common, "--defense", "fgm"), "different settings", "defense.defense")
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == listing
    # (Unreadable checkpoints are skipped, not refused: tests/test_nothing_lost.py.)


# The README's main job and the clean baseline on real images; every defense trains on small
# data in tests/test_training.py.
@pytest.mark.parametrize("defense", ["none", "pgn"])
@pytest.mark.slow
def test_smoke_preset_on_the_cifar10_copy(cifar10_jpeg, tmp_path, defense):
    result = run_py("--mode", "train", "--defense", defense, "--preset", "smoke",
                    "--dataset", f"folder:{cifar10_jpeg}", "--run_dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) >= 6 and sum(losses[-2:]) < sum(losses[:2])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "checkpoints").glob("ckpt-*.index"))
    config = json.loads((run / "config.json").read_text())
    assert config["flags"]["preset"] == "smoke" and config["flags"]["defense"] == defense
    assert not {"test_srcdir", "hbm_oom_exit", "logtostderr"} & set(config["flags"])  # this tool's flags only
    assert config["settings"]["defense.eps"] == pytest.approx(8 / 255 if defense == "rvs" else 0.5)
    assert config["dataset"]["train_size"] == 2048 and config["dataset"]["class_names"][0] == "airplane"
    assert {"tensorflow", "keras", "cleverhans", "numpy"} <= set(config["versions"])


@pytest.mark.slow
def test_a_killed_run_saves_and_the_same_command_resumes_it(tiny_folder, tmp_path):
    args = ["--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"), "--defense", "none",
            "--width", "0.125", "--batch_size", "8", "--epochs", "1000", "--log_every_steps", "1",
            "--run_dir", str(tmp_path / "run")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = tmp_path / "run" / "metrics.jsonl"
    # Killed once 30 steps are logged, however long they take (the run alone would go on for
    # 12,000 steps, so it is still training when the signal comes).
    while process.poll() is None and (not metrics.exists() or metrics.read_text().count('"train"') < 30):
        time.sleep(0.2)
    process.terminate()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted: saved step" in out
    saved = int(out.split("interrupted: saved step ")[1].split(";")[0])
    assert saved >= 30
    resumed = run_py(*args[:-2], "--epochs", "1", "--run_dir", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {tmp_path / 'run'} from step {saved}" in resumed.stdout
