"""A study on both engines (study/engines.py): a two-node Ray cluster on this machine, the process
training a run killed mid-run, and the one-line refusals. Smoke-sized: a few seconds per job."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_study_engines")]  # one worker: its module fixtures are made once
KILLED = "fgm-eps0.5-seed0"
LOST = "none-seed0"
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
    # "lowest" depends on every run's final accuracy: the evaluations wait for the end of training
    assert not [line for line in lines if "ahead of the training" in line]
    assert max(i for i, line in enumerate(lines) if line.startswith("run ")) < \
        min(i for i, line in enumerate(lines) if line.startswith("evaluation of "))
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


def _when_past_first_epoch(root: Path, name: str, act, done: list) -> threading.Thread:
    """Calls ``act(state)`` once the process training ``name`` has checkpointed its first epoch,
    and records the state it acted on."""
    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = jobs.read_state(root, "train", name) or {}
            if state.get("state") == "running" and _epochs(root / name):
                done.append(state)
                act(state)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def cluster():
    """Two single-CPU nodes beside a head that runs no task (so that either can be removed)."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            made.add_node(num_cpus=1)
        made.wait_for_nodes()
        yield made
    finally:
        made.shutdown()


def test_a_study_on_a_ray_cluster_survives_a_killed_worker_and_a_lost_node(spec, uninterrupted, cluster, tmp_path):
    """Against ``uninterrupted`` (the same study on the local engine): one run's process is
    SIGKILLed (as `kill -9` of the worker found with ps would), the node training the other is
    removed from the cluster; Ray retries both (on the node left), and each resumes from its
    checkpoint and ends bit for bit as if never interrupted. The other tests add the node back."""
    root, lines, killed, lost = tmp_path / "study", [], [], []

    def remove_its_node(state):
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == state["node_id"]))

    watchers = [_when_past_first_epoch(root, KILLED, lambda state: os.kill(state["pid"], signal.SIGKILL), killed),
                _when_past_first_epoch(root, LOST, remove_its_node, lost)]
    code = run_study(spec, str(root), Options("ray", cluster.address, 1, 0), say=lines.append)
    for watcher in watchers:
        watcher.join(timeout=5)
    said = "\n".join(lines)
    assert code == 0, said
    assert killed and lost, f"a training process was never seen running: {said}"
    assert f"run {KILLED}: its process died on {killed[0]['node']}; retrying, attempt 2 of 3" in said
    assert f"run {LOST}: its node {lost[0]['node']} was lost; retrying, attempt 2 of 3" in said
    assert (jobs.read_state(root, "train", LOST) or {}).get("node_id") != lost[0]["node_id"]
    for name in (KILLED, LOST):
        # resumed from its checkpoint, not step 0, and ended as if never interrupted (bit for bit)
        assert _starts(root / name)[0] == 0 and max(_starts(root / name)) > 0, name
        _same_as(root / name, uninterrupted / name)
    assert (root / "report" / "report.md").exists()
    assert "summary: 0 run(s) trained, 2 resumed" in said and "2 job(s) retried" in said
    cluster.add_node(num_cpus=1)  # (from the main thread: Ray's node start sets signal handlers)
    cluster.wait_for_nodes()

    # The same root on the local engine: finished work is skipped; --status trains nothing.
    again = []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=again.append) == 0
    assert "evaluation: 0 run(s) to evaluate, 2 evaluated" in again, again
    assert any(line.startswith("training: 0 run(s) to train, 2 finished") for line in again), again
    status = []
    show_status(spec, str(root), say=status.append)
    assert status[0] == "[1/2] none-seed0: finished" and status[-1].startswith("status: 2 of 2 run(s) trained, "
                                                                                "0 running now")


def test_kill_stops_a_driver_on_ray_as_ctrl_c_does(cluster, tmp_path):
    """ray.init puts a C++ handler of its own under SIGTERM (a stack dump, then death, leaving the
    jobs no time to save a checkpoint); the engine gives the driver back its own handler."""
    script = ("import os, signal, sys, time\nfrom pathlib import Path\nfrom study.engines import RayEngine\n"
              "seen = []\nsignal.signal(signal.SIGTERM, lambda *_: seen.append('SIGTERM'))\n"
              f"engine = RayEngine(Path({str(tmp_path)!r}), {cluster.address!r}, 1, 0)\n"
              "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.5)\nengine.close()\nprint('handled:', seen)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "handled: ['SIGTERM']", done.stderr[-2000:]


def test_ray_tasks_get_the_drivers_code_and_are_placed_like_any_task(cluster, tmp_path):
    """``runtime_env``: a node needs no checkout at the driver's path (nor a PYTHONPATH naming one);
    Ray retries a task whose worker or node died, spread over the nodes, never pinned to one."""
    from study import engines

    def where():
        import study.jobs
        from training.rundir import git_state
        return study.jobs.__file__, os.environ.get("PYTHONPATH", ""), [p for p in sys.path if p == str(ROOT)], \
            git_state()

    engine = engines.RayEngine(tmp_path, cluster.address, 1, 0)
    try:
        path, pythonpath, on_path, git = engine.ray.get(engine.ray.remote(num_cpus=1)(where).remote(), timeout=300)
        options = engine.task._default_options
        # as many jobs at once as the nodes have CPUs for: the study queues the rest itself, so an
        # evaluation queued as its run finishes goes ahead of the training still to do
        slots = engine.capacity
    finally:
        engine.close()
    assert slots == 2  # two one-CPU nodes (the head has none)
    assert not path.startswith(str(ROOT)) and "runtime_resources" in path, path
    assert git == rundir.git_state()  # a run's config.json names the driver's commit, though the copy has no .git
    assert str(ROOT) not in pythonpath.split(os.pathsep) and not on_path
    assert options["max_retries"] == engines.MAX_ATTEMPTS - 1 and options["retry_exceptions"] is False
    assert options["scheduling_strategy"] == "SPREAD" and options["max_calls"] == 1


def test_a_stop_under_ray_says_each_jobs_true_state_also_for_a_study_started_in_the_background(
        tiny_folder, cluster, tmp_path):
    """Three runs on two single-CPU nodes: `kill` once one has checkpointed an epoch. A run that was
    training is "stopped at step N" (its checkpoint's step), the one Ray still queued "not started".
    The driver is started as `cmd &` in a script starts it, with SIGINT ignored (the next test: the
    workers of a Ray instance it starts inherit that)."""
    spec = tmp_path / "three.toml"
    spec.write_text(SPEC.replace("seeds = [0]", "seeds = [0, 1, 2]").replace(
        "[[arms]]\ndefense = \"fgm\"\nsweep = { eps = [0.5] }\n", ""))
    root = tmp_path / "root"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    driver = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--mode", "study", "--spec", str(spec),
                               "--root", str(root), "--dataset", f"folder:{tiny_folder}", "--engine", "ray",
                               "--ray_address", cluster.address], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline, first = time.monotonic() + 300, None
        while first is None and time.monotonic() < deadline and driver.poll() is None:
            first = next((n for n in (f"none-seed{s}" for s in range(3)) if _epochs(root / n)), None)
            time.sleep(0.05)
        assert first, "no run trained an epoch"
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 130, out[-3000:]
    lines = out.splitlines()
    stopped = [line for line in lines if f"run {first}: stopped on " in line]
    assert len(stopped) == 1 and stopped[0].endswith("; the same command resumes it"), out[-3000:]
    assert "did not stop within" not in out, out[-3000:]  # it saved its checkpoint when told
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert step >= max(_starts(root / first) + [1]) and step in _checkpoint_steps(root / first)
    assert sum("not started; the same command runs it" in line for line in lines) == 1, out[-3000:]


def test_a_job_answers_rays_cancel_in_a_ray_instance_started_with_sigint_ignored(tmp_path):
    """A study started in the background (`cmd &` in a script: SIGINT ignored) starts its Ray
    instance with SIGINT ignored in every worker, where Ray's cancel (``_thread.interrupt_main``)
    does nothing: its jobs trained on through the stop and were killed without a checkpoint. A
    job first gives SIGINT back to Python (``answer_ray_cancel``)."""
    script = f"""
import os, pathlib, signal, time, ray
from study import engines
def job(answer, flag):
    if answer:
        engines.answer_ray_cancel()
    pathlib.Path(flag + ".started").touch()
    try:
        for _ in range(600):
            time.sleep(0.1)
    except KeyboardInterrupt:
        pathlib.Path(flag).touch()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
try:
    task = ray.remote(num_cpus=1, max_retries=0)(job)
    refs = [task.remote(answer, os.path.join({str(tmp_path)!r}, str(answer))) for answer in (True, False)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(os.path.exists(os.path.join({str(tmp_path)!r}, f"{{a}}.started"))
                                                  for a in (True, False)):
        time.sleep(0.1)
    for ref in refs:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + 120  # however loaded the machine: until the answering one is seen to answer
    while time.monotonic() < deadline and not os.path.exists(os.path.join({str(tmp_path)!r}, "True")):
        time.sleep(0.1)
    time.sleep(5)  # both cancels were sent together: the other had as long
finally:
    ray.shutdown()
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "True.started").exists() and (tmp_path / "False.started").exists(), done.stderr[-3000:]
    assert (tmp_path / "True").exists()        # answered the cancel
    assert not (tmp_path / "False").exists()   # without it, the cancel never arrives: why the job needs it


def test_a_job_deaf_to_the_stop_is_ended_and_reported_by_either_engine(cluster, tmp_path, monkeypatch):
    """A job that does not answer the stop within STOP_WAIT_SECONDS (a long attack in one graph, a
    worker that never saw the signal) is ended with the engine, and the summary says so by name
    instead of leaving it out ("0 stopped")."""
    from eval.config import EvalConfig
    from study import engines
    from study.evaluations import EvaluationJob
    from study.runner import _Tally

    monkeypatch.setattr(engines, "STOP_WAIT_SECONDS", 1.0)
    base = dict(root=str(tmp_path), cwd=str(tmp_path), threads=1)
    work = EvaluationJob(str(tmp_path / "a"), None, None, True, (), EvalConfig(run_dirs=("a",)))
    job = jobs.Job("evaluate", "a", work=work, **base)
    deaf = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('deaf', flush=True)\n" \
           "try:\n    time.sleep(300)\nexcept KeyboardInterrupt:\n    time.sleep(300)\n"

    local = engines.LocalEngine(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", deaf], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "deaf"  # past its handler: SIGTERM is ignored
    local.running[process] = (job, tmp_path / "result.json")
    (ended,) = local.stop()
    assert process.poll() is not None and not local.running
    ray_engine = engines.RayEngine(tmp_path, cluster.address, 1, 0)
    try:
        def sleeper(code):
            exec(code)
        ref = ray_engine.ray.remote(num_cpus=1, max_retries=0)(sleeper).remote(deaf)
        time.sleep(5)  # started
        ray_engine.running[ref] = engines._Task(job, "token")
        (ray_ended,) = ray_engine.stop()
        assert not ray_engine.running
        with pytest.raises(ray_engine.ray.exceptions.RayError):  # killed (force), not left running
            ray_engine.ray.get(ref, timeout=60)
    finally:
        ray_engine.close()
    for engine_job, result in (ended, ray_ended):
        lines = []
        assert engine_job is job and result["outcome"] == "stopped" and result["unanswered"] == 1.0
        tally = _Tally(lines.append, 1)
        tally.ended(job, result)
        tally.summary(1.0)
        assert lines[0].startswith("evaluation of a: stopped") and "did not stop within 1 s and was ended: the " \
            "attack it was running is lost" in lines[0]
        assert "0 evaluated, 0 failed, 1 stopped" in lines[-1]


def _checkpoint_steps(run_dir: Path) -> set[int]:
    return {int(p.name.split("-")[1].split(".")[0]) for p in (run_dir / "checkpoints").glob("ckpt-*.index")}


def test_a_dead_drivers_local_job_ends_with_it_and_frees_the_run(spec, tmp_path):
    """The driver SIGKILLed while its local job trains: the job is told (PR_SET_PDEATHSIG), saves
    its checkpoint and ends, so that its lock does not hold up the next command."""
    from training import lock

    root = tmp_path / "root"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(SPEC.replace("epochs = 6", "epochs = 200"))
    driver = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--mode", "study", "--spec", str(spec_file),
                               "--root", str(root), "--dataset", spec.dataset, "--cpus_per_run", "1"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = []
        _when_past_first_epoch(root, "none-seed0", lambda state: driver.kill(), seen).join(timeout=300)
        assert seen, "the run never trained an epoch"
    finally:
        driver.kill()
        driver.wait()
    pid, deadline = seen[0]["pid"], time.monotonic() + 120
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the job outlived its driver"
    state = jobs.read_state(root, "train", "none-seed0")
    assert state["state"] == "ended" and state["outcome"] == "stopped" and state["step"] > 0
    assert lock.holder(root / "none-seed0") is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _study_cli(tmp_path: Path, folder: Path, *args: str, pythonpath: str = str(ROOT)) -> subprocess.CompletedProcess:
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC.replace("[study]", f"[study]\ndataset = \"folder:{folder}\""))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath)
    # 60 s bounds a process that takes seconds; Ray's own retries against a missing cluster take minutes.
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--mode", "study", "--spec", str(spec),
                           "--root", str(tmp_path / "root"), "--engine", "ray", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tiny_folder, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert_one_line_error(_study_cli(tmp_path, tiny_folder, "--ray_address", f"127.0.0.1:{port}"), "--ray_address",
                          "nothing answers")
    assert not any((tmp_path / "root").glob("*-seed*"))


def test_ray_not_installed_is_one_line_and_exit_2(tiny_folder, tmp_path):
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = _study_cli(tmp_path, tiny_folder, pythonpath=f"{fake.parent}{os.pathsep}{ROOT}")
    assert_one_line_error(result, "--engine ray needs Ray", "pip install ray==2.60.0")


@pytest.mark.parametrize("mode, printed, error", [
    (None, "gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: InvalidAuthToken: "
           "Authentication token is missing or incorrect", "ConnectionError"),
    ("token", "", "AuthenticationError")])
def test_a_cluster_that_asks_for_a_token_is_named_in_the_refusal(monkeypatch, mode, printed, error):
    """Ray 2.60's failures as measured against `ray start --head` with a token: a driver without
    RAY_AUTH_MODE=token retries for seconds, printing InvalidAuthToken, then raises ConnectionError;
    one with it but without the token raises AuthenticationError."""
    from study import engines

    if mode:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    else:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    err = type(error, (Exception,), {})("Token authentication is enabled but no authentication token was found" if mode
                                        else "Failed to connect to Ray cluster at 192.0.2.2:6379")
    line = engines._join_failed("192.0.2.2:6379", err, printed)
    assert "\n" not in line and line.startswith("--ray_address 192.0.2.2:6379: the Ray cluster there uses token "
                                                "authentication")
    assert ("has no token" if mode else "RAY_AUTH_MODE=unset") in line and "RAY_AUTH_MODE=token" in line
    assert "no Ray cluster to join" in engines._join_failed("h:1", ConnectionError("Failed to connect"), "")


def _ray_start_commands(docs: str) -> list[str]:
    """The shell lines of docs/studies.md's cluster recipe, up to the study command."""
    section = docs.split("### Running on a cluster", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in section.splitlines()
            if line.strip().startswith(("ray ", "export "))]


def test_the_docs_cluster_recipe_works_as_written_and_a_driver_without_the_token_is_told_why(tmp_path):
    """docs/studies.md's commands, in a fresh home (Ray keeps its token in ~/.ray), with HEAD this
    machine, a port of its own and one CPU a node; then the study's join, with and without
    RAY_AUTH_MODE=token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    commands = _ray_start_commands((ROOT / "docs" / "studies.md").read_text())
    assert [c.split()[:2] for c in commands] == [["ray", "get-auth-token"], ["export", "RAY_AUTH_MODE=token"],
                                                 ["ray", "start"], ["ray", "start"]], commands
    # Ray's processes are found (and stopped) by this path, short: Ray's sockets live under it
    sessions = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    script = "set -e\n" + "\n".join(
        c.replace("HEAD:6379", f"127.0.0.1:{port}").replace("--port 6379", f"--port {port}")
         .replace("--num-cpus 16", "--num-cpus 1")
        + (f" --temp-dir {sessions} --include-dashboard false" if "--head" in c else "") for c in commands)
    env = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    env.pop("RAY_AUTH_MODE", None)
    join = ("from pathlib import Path\nfrom study.engines import EngineError, RayEngine\ntry:\n"
            f"    RayEngine(Path({str(tmp_path / 'root')!r}), '127.0.0.1:{port}', 1, 0).close()\n    print('joined')\n"
            "except EngineError as err:\n    print(err)\n")
    try:
        started = subprocess.run(["bash", "-c", script + f"\n{sys.executable} -c \"$JOIN\""], env={**env, "JOIN": join},
                                 capture_output=True, text=True, timeout=300)
        assert started.returncode == 0 and started.stdout.strip().endswith("joined"), started.stderr[-3000:]
        refused = subprocess.run([sys.executable, "-c", join], env=env, capture_output=True, text=True, timeout=300)
    finally:
        for line in subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines():
            if str(sessions) in line:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[0]), signal.SIGKILL)
        shutil.rmtree(sessions, ignore_errors=True)
    said = refused.stdout.strip()
    assert said.startswith(f"--ray_address 127.0.0.1:{port}: the Ray cluster there uses token authentication and "
                           f"this process does not use it (RAY_AUTH_MODE=unset)") and "\n" not in said, refused


def test_the_local_engine_runs_a_job_whose_process_died_again_and_gives_up_after_three(tmp_path):
    """Each attempt's process SIGKILLed as soon as it starts: two retries, then JobDied."""
    from eval.config import EvalConfig
    from study import engines
    from study.jobs import Job, ReportWork
    from study.report_config import ReportConfig

    engine = engines.LocalEngine(tmp_path)
    engine.submit(Job("report", "report", str(tmp_path), str(tmp_path), 1,
                      ReportWork(EvalConfig(run_dirs=()), ReportConfig())))
    events = []
    for _ in range(engines.MAX_ATTEMPTS):
        process = next(iter(engine.running))
        process.kill()
        events += [result for _, result in engine.poll(60.0)]
    assert [type(e).__name__ for e in events] == ["Retrying", "Retrying", "JobDied"], events
    assert [e.attempt for e in events[:2]] == [2, 3] and "signal SIGKILL and no result" in events[0].why
    assert events[2].why.startswith("its process died 3 times") and not engine.running
