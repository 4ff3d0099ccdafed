"""What a study refuses before anything starts (study/checks.py, item 8 of issue 34), one driver
per root (the root's lock), and a study's own account of itself: a failed evaluation is counted and
its dependents are not started, an unchanged study evaluates nothing twice, ``--status``."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from study import checks, jobs
from study.evaluations import EvaluationJob, RunEvaluation, record_path
from study.jobs import Job
from study.runner import Options, run_study
from study.spec import SpecError, load
from tests.test_cli import assert_one_line_error, run_py
from training import lock, rundir

pytestmark = pytest.mark.xdist_group("test_study_checks")  # one worker: its module fixtures are made once

SPEC = """
[study]
seeds = [0]
[training]
epochs = 2
batch_size = 16
width = 0.125
augment = "none"
monitor_size = 8
keep_checkpoints = "all"
checkpoint_every_minutes = 0.0
[[arms]]
defense = "none"
[[arms]]
defense = "fgm"
sweep = { eps = [0.5, 1.0] }
table = 0.5
[matching]
target = 0.01
tolerance = 1.0
[evaluation]
attacks = ["fgm"]
test_limit = 12
masking_iters = 1
source = { defense = "none", seed = 3 }
[report]
figure2_epochs = 1
training_logs = "LOGS"
"""


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, fragments", [
    (("epochs = 2", "epochs = 0"), ["training.epochs", "[1, 100000]"]),
    (("epochs = 2", "epochs = 1000000000000"), ["training.epochs", "1000000000000"]),
    (("seeds = [0]", "seeds = [-1]"), ["seed -1", "2**32"]),
    (("seeds = [0]", f"seeds = [{2 ** 32}]"), [f"seed {2 ** 32}"]),
    (("sweep = { eps = [0.5, 1.0] }", "sweep = { eps = [0.0, 0.5] }"), ["fgm-eps0-seed0", "eps must be > 0"]),
    (("batch_size = 16", "batch_size = 64\ntrain_limit = 32"), ["batch_size 64", "train_limit 32"]),
    (("width = 0.125", "width = -1.0"), ["width"]),
])
def test_runs_every_job_would_fail_are_refused_when_the_spec_is_read(tmp_path, change, fragments):
    path = _write(tmp_path, SPEC.replace(*change))
    with pytest.raises(SpecError) as err:
        load(path, dataset="folder:/never-read")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_dataset_folder_missing_or_not_laid_out_is_refused(tmp_path, tiny_folder):
    spec = load(_write(tmp_path, SPEC), dataset=f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(SpecError, match="does not exist"):
        checks.check_dataset(spec)
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    with pytest.raises(SpecError, match="no test/ subfolder"):
        checks.check_dataset(load(_write(tmp_path, SPEC), dataset=f"folder:{flat}"))
    (flat / "test").mkdir()
    with pytest.raises(SpecError, match="holds no class folders"):
        checks.check_dataset(load(_write(tmp_path, SPEC), dataset=f"folder:{flat}"))
    checks.check_dataset(load(_write(tmp_path, SPEC), dataset=f"folder:{tiny_folder}"))
    with pytest.raises(SpecError, match="is not a file"):
        checks.check_dataset(load(_write(tmp_path, SPEC), dataset=f"npz:{tmp_path / 'missing.npz'}"))


def test_a_root_that_is_a_file_or_unwritable_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SpecError, match="is a file, not a directory"):
        checks.check_root(afile)
    with pytest.raises(SpecError, match="cannot be made"):
        checks.check_root(afile / "below")
    from study.status import show_status
    with pytest.raises(SpecError, match="is a file, not a directory"):
        show_status(load(_write(tmp_path, SPEC), dataset="folder:/never-read"), str(afile), say=lambda *_: None)
    checks.check_root(tmp_path / "new" / "root")  # made when the study starts
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: the unwritable case cannot be made")
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(SpecError, match="not writable"):
            checks.check_root(locked / "root")
    finally:
        locked.chmod(stat.S_IRWXU)


def _recorded_run(spec, root: Path, name: str, **changed) -> Path:
    """A run directory whose config.json records the spec's settings for run ``name``, but ``changed``."""
    import data
    from training.config import DefenseConfig, TrainConfig
    run = next(r for r in spec.runs(root) if r.name == name)
    configs = spec.configs(run)
    settings = rundir.flatten_settings(data=data.DataConfig(**configs["data"]), train=TrainConfig(**configs["train"]),
                                       defense=DefenseConfig(**configs["defense"]).resolved())
    run.planned.run_dir.mkdir(parents=True)
    (run.planned.run_dir / rundir.CONFIG_FILE).write_text(json.dumps({"settings": {**settings, **changed}}))
    return run.planned.run_dir


def test_runs_trained_with_other_settings_than_the_spec_are_refused_by_name(tmp_path):
    spec = load(_write(tmp_path, SPEC.replace("epochs = 2", "epochs = 2\nlr = 0.001\ntrain_limit = 512")),
                dataset="folder:/never-read")
    root = tmp_path / "root"
    _recorded_run(spec, root, "none-seed0")
    checks.check_recorded(spec, root, spec.runs(root))  # the same settings: reused
    _recorded_run(spec, root, "fgm-eps0.5-seed0", **{"train.lr": 0.0005, "data.train_limit": 256})
    _recorded_run(spec, root, "fgm-eps1-seed0", **{"train.lr": 0.0005})
    with pytest.raises(SpecError) as err:
        checks.check_recorded(spec, root, spec.runs(root))
    text = str(err.value)
    assert "fgm-eps0.5-seed0" in text and "data.train_limit 256 -> 512" in text and "train.lr 0.0005 -> 0.001" in text
    assert "and 1 other run(s) too" in text and "new --root" in text and "\n" not in text


def test_the_planned_hours_are_said_and_an_absurd_plan_refused(tmp_path, monkeypatch):
    import study.sweep
    spec = load(_write(tmp_path, SPEC), dataset="folder:/never-read")
    runs = spec.runs(tmp_path)
    monkeypatch.setattr(study.sweep, "estimate", lambda *a: ("not started", "", 2.0))
    assert checks.planned_hours(spec, tmp_path, runs) == (2.0 * len(runs), 0)
    monkeypatch.setattr(study.sweep, "estimate", lambda *a: ("not started", "", 57e6))
    with pytest.raises(SpecError, match="57,000,000 h"):
        checks.planned_hours(spec, tmp_path, runs)


def test_one_driver_per_root_and_the_refusal_names_the_holder(tmp_path, tiny_folder):
    spec = load(_write(tmp_path, SPEC), dataset=f"folder:{tiny_folder}")
    root = tmp_path / "root"
    with lock.hold(root / jobs.STATE_DIR, "test", "-"):
        with pytest.raises(lock.DirectoryLocked) as err:
            run_study(spec, str(root), Options("local", None, 1, 0), say=lambda *_: None)
    assert f"PID {os.getpid()}" in str(err.value) and f"--root {root}" in str(err.value)
    assert not any(p.name != jobs.STATE_DIR for p in root.iterdir())  # nothing started


@pytest.mark.slow
def test_bad_roots_and_a_held_root_are_one_line_from_the_command_line(tmp_path, tiny_folder):
    spec = _write(tmp_path, SPEC)
    afile = tmp_path / "afile"
    afile.write_text("")
    common = ("--mode", "study", "--spec", str(spec), "--dataset", f"folder:{tiny_folder}")
    assert_one_line_error(run_py(*common, "--root", str(afile)), "is a file, not a directory")
    root = tmp_path / "root"
    with lock.hold(root / jobs.STATE_DIR, "test", "-"):
        assert_one_line_error(run_py(*common, "--root", str(root)), f"PID {os.getpid()}", "another study")


def test_jobs_and_records_cross_process_boundaries_as_versioned_json(tmp_path):
    from eval.config import EvalConfig
    from study.matching import Match
    work = EvaluationJob(str(tmp_path / "fgm-seed0"), Match(3, 0.5, 0.49, 0.01), 3, True, (1, 3),
                         EvalConfig(run_dirs=(str(tmp_path / "fgm-seed0"),), attacks=("fgm", "cw")), 100, 0)
    job = Job("evaluate", "fgm-seed0", str(tmp_path), str(tmp_path), 2, work, attempt=2, avoid="node")
    text = json.dumps(job.to_json())
    assert Job.from_json(json.loads(text)) == job
    for bad in ({**json.loads(text), "version": 99}, {**json.loads(text)["work"], "version": None}):
        with pytest.raises(ValueError, match="version"):
            (Job if "kind" in bad else EvaluationJob).from_json(bad)
    record = RunEvaluation("fgm-seed0", "abc", {"benign_accuracy": float("nan")}, None, ({"epoch": 1, "cw": {}},))
    assert RunEvaluation.from_json(json.loads(json.dumps(record.to_json()))).figure2 == record.figure2
    assert record_path(tmp_path, "x") == tmp_path / ".study" / "evaluated-x.json"


def test_the_summary_counts_stopped_and_failed_evaluations_and_says_whether_the_report_was_made(tmp_path):
    from study.runner import _Tally
    from study.evaluations import EvaluationJob
    from eval.config import EvalConfig
    lines = []
    tally = _Tally(lines.append, 1)
    base = dict(root=str(tmp_path), cwd=str(tmp_path), threads=1)
    work = EvaluationJob(str(tmp_path / "a"), None, None, True, (), EvalConfig(run_dirs=("a",)))
    tally.ended(Job("evaluate", "a", work=work, **base), {"outcome": "stopped", "error": "interrupted"})
    tally.ended(Job("evaluate", "b", work=work, **base), {"outcome": "failed", "error": "RunDirError: x"})
    tally.summary(1.0)
    assert lines[0] == "evaluation of a: stopped; the same command runs it again, reusing the attacks it finished"
    assert "before its first checkpoint" not in "\n".join(lines)
    assert "0 evaluated, 1 failed, 1 stopped; report not made;" in lines[-1]


# ----------------------------------------------------------------------------- a real study


@pytest.fixture(scope="module")
def studied(tiny_folder, tmp_path_factory):
    """A study with a black-box source and a fixed target, run once on the local engine, one thread
    per job: clean, the source, FGM-AT at its table value and at a curve value."""
    folder = tmp_path_factory.mktemp("checked")
    spec = load(_write(folder, SPEC.replace("LOGS", str(folder / "logs"))), dataset=f"folder:{tiny_folder}")
    root, lines = folder / "root", []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=lines.append) == 0, "\n".join(lines)
    return spec, root, lines


@pytest.mark.slow
def test_an_unchanged_study_evaluates_nothing_again(studied):
    spec, root, lines = studied
    assert any(line.startswith("training: 4 run(s) to train, 0 finished") for line in lines)
    assert "training: no estimate yet: no run under the root trains like these" in lines
    assert "; report written;" in lines[-1] and "3 evaluated, 0 failed, 0 stopped" in lines[-1]
    for _ in range(2):
        again = []
        assert run_study(spec, str(root), Options("local", None, 1, 0), say=again.append) == 0, "\n".join(again)
        assert "evaluation: 0 run(s) to evaluate, 3 evaluated" in again, "\n".join(again)
        assert "0 evaluated, 0 failed" in again[-1] and "report written" in again[-1]
        assert not [line for line in again if "copied, to commit" in line]  # the copies are up to date
    # The report alone, with the study's settings (as while a study trains): it finds every evaluation stored.
    report = root / "report" / "report.json"
    table = json.loads(report.read_text())["table"]
    report.unlink()
    made = run_py("--mode", "report", "--spec", str(spec.path), "--root", str(root), "--dataset", spec.dataset)
    assert made.returncode == 0, made.stderr[-3000:]
    assert json.loads(report.read_text())["table"] == table and "evaluating" not in made.stdout
    assert_one_line_error(run_py("--mode", "report", "--spec", str(spec.path), "--root", str(root), "--test_limit",
                                 "9"), "takes its settings from", "--test_limit")


@pytest.mark.slow
def test_with_a_fixed_target_each_run_is_evaluated_soon_after_it_trains_and_its_log_copied(studied):
    spec, root, lines = studied
    assert [r.name for r in spec.runs(root)] == ["none-seed0", "none-seed3", "fgm-eps0.5-seed0",
                                                "fgm-eps1-seed0"]  # the source right after the first clean run

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # Nothing is evaluated before the source finished; then each finished run is, before the next trains.
    queued = at("evaluation of none-seed0: queued, ahead of the training still to do")
    assert at("run none-seed3: done") < queued < at("evaluation of none-seed0: done") < \
        at("run fgm-eps0.5-seed0: training on")
    assert at("run fgm-eps0.5-seed0: done") < at("evaluation of fgm-eps0.5-seed0: done") < \
        at("run fgm-eps1-seed0: training on")
    assert at("run fgm-eps1-seed0: done") < at("evaluation of fgm-eps1-seed0: done")
    assert "evaluation: 0 run(s) to evaluate, 3 evaluated" in lines  # nothing was left for the end
    report = json.loads((root / "report" / "report.json").read_text())
    # The spec's table value, though eps 1.0 has as many seeds (one) as eps 0.5.
    assert [r["run"] for r in report["table"]["fgm"]["rows"]] == ["fgm-eps0.5-seed0"]
    logs = Path(spec.report["training_logs"])
    for name in ("none-seed0", "none-seed3", "fgm-eps0.5-seed0", "fgm-eps1-seed0"):
        assert (logs / name / "metrics.jsonl").read_bytes() == (root / name / "metrics.jsonl").read_bytes()
        assert json.loads((logs / name / "config.json").read_text())["settings"]["train.seed"] in (0, 3)
    for name in ("none-seed0", "fgm-eps0.5-seed0", "fgm-eps1-seed0"):  # the source is not evaluated itself
        assert (logs / name / f"evaluated-{name}.json").read_bytes() == record_path(root, name).read_bytes()
    assert not (logs / "none-seed3" / "evaluated-none-seed3.json").exists()


@pytest.mark.slow
def test_a_run_the_spec_trains_further_is_not_evaluated_while_it_trains(studied, tmp_path):
    """A run whose own config.json says finished, but which the spec trains longer (a longer
    matching.max_epochs, or training.epochs): evaluating it then would read weights being trained."""
    import shutil
    from study import runner
    spec, root, _ = studied
    copy = shutil.copytree(root, tmp_path / "root")
    record_path(copy, "fgm-eps1-seed0").unlink()  # its evaluation is due again
    base = dict(root=str(copy), cwd=str(tmp_path), threads=1)
    todo, done = runner._evaluations(spec, copy, base)
    assert [j.name for j in todo] == ["fgm-eps1-seed0"] and done == 2
    longer = load(_write(tmp_path, spec.path.read_text().replace("epochs = 2", "epochs = 3")), dataset=spec.dataset)
    assert runner._evaluations(longer, copy, base) == ([], 0)


@pytest.mark.slow
def test_a_lost_machine_costs_only_the_runs_without_a_committed_evaluation(studied, tmp_path):
    """A new machine, an empty root: the runs whose log and evaluation record were committed
    (``[report] training_logs``) are restored as finished, weightless runs and keep their numbers;
    only the black-box source, which has no record of its own, trains again."""
    import shutil
    spec, root, _ = studied
    logs = shutil.copytree(spec.report["training_logs"], tmp_path / "logs")  # this test's copy of the commits
    path = _write(tmp_path, spec.path.read_text().replace(spec.report["training_logs"], str(logs)))
    spec = load(path, dataset=spec.dataset)
    fresh, lines = tmp_path / "fresh", []
    assert run_study(spec, str(fresh), Options("local", None, 1, 0), say=lines.append) == 0, "\n".join(lines)
    restored = sorted(line.split("evaluation of run ")[1].split(",")[0] for line in lines
                      if "the training log and evaluation of run" in line)
    assert restored == ["fgm-eps0.5-seed0", "fgm-eps1-seed0", "none-seed0"]
    assert "training: 1 run(s) to train, 3 finished" in lines and "run none-seed3: done (trained)" in "\n".join(lines)
    assert not (fresh / "none-seed0" / rundir.EMA_WEIGHTS_FILE).exists()
    before, after = (json.loads((r / "report" / "report.json").read_text()) for r in (root, fresh))
    for group in ("none", "fgm"):
        for old, new in zip(before["table"][group]["rows"], after["table"][group]["rows"], strict=True):
            assert new["run"] == old["run"] and new["attacks"] == old["attacks"] and new["match"] == old["match"]
    assert [p["cw"] for p in after["curve_points"]] == [p["cw"] for p in before["curve_points"]]


@pytest.mark.slow
def test_the_report_rebuilds_from_the_committed_logs_in_a_fresh_root_by_the_command_it_names(studied, tmp_path):
    """A fresh checkout has only what was committed: the spec's training logs with their evaluation
    records. The command the report names rebuilds its table from them, without weights or the source."""
    spec, root, _ = studied
    fresh = tmp_path / "fresh"
    made = run_py("--mode", "report", "--spec", str(spec.path), "--root", str(fresh), "--dataset", spec.dataset)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "the black-box source is not under --root" in made.stdout
    before, after = (json.loads((r / "report" / "report.json").read_text()) for r in (root, fresh))
    for group in ("none", "fgm"):
        for old, new in zip(before["table"][group]["rows"], after["table"][group]["rows"], strict=True):
            assert new["run"] == old["run"] and new["attacks"] == old["attacks"] and new["match"] == old["match"]
    assert not (fresh / "none-seed3").exists() and not (fresh / "none-seed0" / rundir.EMA_WEIGHTS_FILE).exists()
    named = f"`python run.py --mode report --spec {spec.path} --root DIR`"
    assert named in (fresh / "report" / "report.md").read_text() and named in (root / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_failed_evaluation_is_counted_its_dependents_wait_and_no_report_is_made(studied):
    spec, root, _ = studied
    first = "none-seed0"  # Table 2's first run (clean first): its evaluation crafts the source's adversarials
    for record in (root / jobs.STATE_DIR).glob("evaluated-*.json"):
        record.unlink()
    kept = sorted((root / first / rundir.EPOCHS_DIR).iterdir())
    saved = {p: p.read_bytes() for p in kept}
    for path in kept:
        path.write_bytes(saved[path][:8])  # truncated: its evaluation fails on it
    try:
        lines = []
        assert run_study(spec, str(root), Options("local", None, 1, 0), say=lines.append) == 1
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    text = "\n".join(lines)
    assert f"evaluation of {first}: failed" in text
    assert "evaluation of fgm-eps0.5-seed0: not started (its black-box attacks read the source's adversarials" in text
    assert "report: not made: 1 evaluation(s) failed" in text
    # the curve point's evaluation reads no source adversarials: it runs
    assert "1 evaluated, 1 failed, 0 stopped, 1 not started; report not made" in lines[-1]


@pytest.mark.slow
def test_status_says_a_held_run_without_a_checkpoint_started_and_names_the_driver(studied, tmp_path):
    spec, root, _ = studied
    said = []
    fresh = tmp_path / "fresh"
    with lock.hold(fresh / "none-seed0", "test", "-"), lock.hold(fresh / jobs.STATE_DIR, "test", "-"):
        from study.status import show_status
        show_status(spec, str(fresh), say=said.append)
    line = next(s for s in said if "none-seed0:" in s)
    assert "started, no checkpoint yet" in line and "running now (PID" in line and "not started" not in line
    assert f"the study's driver is PID {os.getpid()}" in said[-1]


def test_status_names_the_evaluations_a_live_process_runs(tmp_path):
    import socket
    from study.status import show_status
    spec = load(_write(tmp_path, SPEC), dataset="folder:/never-read")
    root = tmp_path / "root"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for name, pid in (("none-seed0", os.getpid()), ("fgm-eps0.5-seed0", dead)):  # the second was killed
        path = jobs.state_path(root, "evaluate", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"state": "running", "pid": pid, "host": socket.gethostname()}))
    said = []
    show_status(spec, str(root), say=said.append)
    assert "0 run(s) evaluated, evaluating none-seed0 now; report not written yet" in said[-1]


def test_status_gives_the_attack_hours_left_at_the_evaluated_runs_means(tmp_path):
    from study.evaluations import RunEvaluation, store
    from study.status import show_status
    spec = load(_write(tmp_path, SPEC), dataset="folder:/never-read")
    root = tmp_path / "root"
    said = []
    show_status(spec, str(root), say=said.append)
    assert "0 run(s) evaluated; report" in said[-1]  # nothing to go by yet: no estimate
    row = {"attacks": {"fgm": {"white": {"seconds": 60.0}}, "cw": {"white": {"seconds": 300.0}}},
           "autoattack": {"seconds": {"clean": 0.1, "apgd-ce": 240.0}}}
    store(root, RunEvaluation("none-seed0", "k", row, None))
    said = []
    show_status(spec, str(root), say=said.append)
    # left: the table's fgm-eps0.5-seed0 at none-seed0's 600 s, the curve's fgm-eps1-seed0 at its CW's 300 s
    assert "1 run(s) evaluated, about 0.2 h of attacks left (1 table run(s) at 10 min, 1 curve run(s) at 5 min: " \
           "the evaluated runs' means)" in said[-1], said[-1]



def test_a_restarted_study_says_where_a_job_runs_now_not_where_a_killed_driver_left_it(tmp_path):
    """A machine lost mid-job leaves its state "running" on a node that is gone; the next driver's
    line about that job names the node its own submission runs on."""
    from study.runner import _submit, _Watch
    from study.evaluations import EvaluationJob
    from eval.config import EvalConfig
    work = EvaluationJob(str(tmp_path / "a"), None, None, True, (), EvalConfig(run_dirs=("a",)))
    job = Job("evaluate", "a", work=work, root=str(tmp_path), cwd=str(tmp_path), threads=1)
    jobs._write_state(job, {"state": "running", "attempt": 2, "node": "gone/1", "pid": 13549})
    submitted, lines = [], []
    engine = type("Engine", (), {"submit": lambda self, j: submitted.append(j)})()
    _submit(engine, job)
    watch = _Watch(lines.append)
    watch.update(job)
    assert submitted == [job] and lines == []
    jobs._write_state(job, {"state": "running", "attempt": 1, "node": "here/2", "pid": 7})
    watch.update(job)
    assert lines == ["evaluation of a: evaluating on here/2 (pid 7)"]
