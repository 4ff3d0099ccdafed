"""A study on both engines (study/engines.py): a two-node Ray cluster on this machine, the process
training a run killed mid-run, and the one-line refusals. Smoke-sized: a few seconds per job."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from study import jobs
from study.runner import Options, run_study
from study.spec import load
from study.status import show_status
from training import rundir
from tests.test_cli import ROOT, assert_one_line_error

pytestmark = pytest.mark.slow
KILLED = "fgm-eps0.5-seed0"
SPEC = """
[study]
seeds = [0]
[training]
epochs = 6
batch_size = 16
width = 0.125
gen_width = 0.125
augment = "none"
monitor_size = 8
log_every_steps = 2
keep_checkpoints = "all"
checkpoint_every_minutes = 0.0
[[arms]]
defense = "none"
[[arms]]
defense = "fgm"
sweep = { eps = [0.5] }
[matching]
target = "lowest"
tolerance = 1.0
[evaluation]
attacks = ["fgm"]
test_limit = 12
masking_iters = 1
[report]
figure2_epochs = 1
"""


@pytest.fixture(scope="module")
def spec(tiny_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return load(path, dataset=f"folder:{tiny_folder}")


@pytest.fixture(scope="module")
def uninterrupted(spec, tmp_path_factory) -> Path:
    """The study on the local engine, one thread per job: each run trained once, start to end."""
    root, lines = tmp_path_factory.mktemp("local"), []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=lines.append) == 0, "\n".join(lines)
    assert "summary: 2 run(s) trained, 0 resumed" in lines[-1]
    return root


def _weights(run_dir: Path) -> list[np.ndarray]:
    import h5py
    arrays = []
    with h5py.File(run_dir / "ema_classifier.weights.h5", "r") as f:
        f.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def _epochs(run_dir: Path) -> list[tuple]:
    """(epoch, benign accuracy, training loss) of each epoch (a line being written is not read)."""
    return [(r["epoch"], r["test_acc"], r["train_loss"]) for r in rundir.read_metrics(run_dir, "epoch_record")]


def _starts(run_dir: Path) -> list[int]:
    return [r["step"] for r in rundir.read_metrics(run_dir, "start")]


def _same_as(run_dir: Path, reference: Path) -> None:
    assert _epochs(run_dir) == _epochs(reference)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run_dir), _weights(reference), strict=True))


def _kill_when_past_first_epoch(root: Path, name: str, killed: list) -> threading.Thread:
    """SIGKILLs the process training ``name`` once its first epoch is checkpointed (as `kill -9` of
    the worker found with ps would), and records the pid."""
    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = jobs.read_state(root, "train", name) or {}
            run_dir = root / name
            if state.get("state") == "running" and _epochs(run_dir):
                os.kill(state["pid"], signal.SIGKILL)
                killed.append(state)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_study_on_a_two_node_ray_cluster_survives_a_killed_training_process(spec, uninterrupted, tmp_path):
    """Against ``uninterrupted`` (the same study on the local engine); one test, so that parallel
    test processes do not each train that reference."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        root, lines, killed = tmp_path / "study", [], []
        watcher = _kill_when_past_first_epoch(root, KILLED, killed)
        code = run_study(spec, str(root), Options("ray", cluster.address, 1, 0), say=lines.append)
        watcher.join(timeout=5)
    finally:
        cluster.shutdown()
    said = "\n".join(lines)
    assert code == 0, said
    assert killed, "the training process was never seen running"
    assert f"run {KILLED}: its process died on {killed[0]['node']}" in said
    # (b) the killed run resumed from its checkpoint, not step 0, and ended as if never killed;
    assert _starts(root / KILLED)[0] == 0 and max(_starts(root / KILLED)) > 0
    # (a) every run (the other one never interrupted) equals its training on the local engine, bit for bit.
    for name in ("none-seed0", KILLED):
        _same_as(root / name, uninterrupted / name)
    assert (root / "report" / "report.md").exists()
    assert "summary: 1 run(s) trained, 1 resumed" in said and "1 job(s) retried" in said

    # The same root on the local engine: finished work is skipped; --status trains nothing.
    again = []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=again.append) == 0
    assert "training: 0 run(s) to train, 2 finished" in again and "evaluation: 0 run(s) to evaluate, 2 evaluated" \
        in again
    status = []
    show_status(spec, str(root), say=status.append)
    assert status[0] == "[1/2] none-seed0: finished" and status[-1].startswith("status: 2 of 2 run(s) trained, "
                                                                                "0 running now")


def _study_cli(tmp_path: Path, *args: str, pythonpath: str = str(ROOT)) -> subprocess.CompletedProcess:
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC.replace("[study]", "[study]\ndataset = \"folder:/never-read\""))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath)
    # 60 s bounds a process that takes seconds; Ray's own retries against a missing cluster take minutes.
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--mode", "study", "--spec", str(spec),
                           "--root", str(tmp_path / "root"), "--engine", "ray", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert_one_line_error(_study_cli(tmp_path, "--ray_address", f"127.0.0.1:{port}"), "--ray_address",
                          "nothing answers")
    assert not any((tmp_path / "root").glob("*-seed*"))


def test_ray_not_installed_is_one_line_and_exit_2(tmp_path):
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = _study_cli(tmp_path, pythonpath=f"{fake.parent}{os.pathsep}{ROOT}")
    assert_one_line_error(result, "--engine ray needs Ray", "pip install ray==2.60.0")
