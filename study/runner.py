"""``run.py --mode study``: a spec's missing training runs, then its missing evaluations, then its
report, each job on an engine (``study.engines``), with one line per job as its state changes.

    python run.py --mode study --spec studies/smoke.toml --root runs/smoke [--engine ray]

Order: training, one evaluation job per run, then the report, which finds every attack cached.
With a matching target given as a number, each finished run is evaluated soon after it trains,
ahead of the training still to do, once the black-box source has finished (so that a lost machine
costs at most the runs in flight, and their evaluations are there to commit): nothing an
evaluation decides moves as other runs finish. With "clean" or "lowest" the target depends on
every run's final accuracy, so the evaluations wait for the end of training. Evaluations run one
at a time when there is a black-box source, the first crafting its adversarials, which the others
read from its cache. With ``[report] training_logs``, each finished run's log and evaluation
record are copied there as they come, to commit. Finished work is skipped: a finished run by its log, an evaluation by
its key (``study.evaluations``). Stopped work resumes: a run from its last checkpoint. A job whose
process or node dies is run again by the engine (``study.engines.MAX_ATTEMPTS``).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import time
from pathlib import Path

from study import checks, jobs
from study.engines import JobDied, Retrying, make_engine
from study.evaluations import jobs_for, record_path, stored_key
from study.jobs import Job, ReportWork, TrainWork
from study.matching import parse_target
from study.options import Options  # noqa: F401 (re-exported: callers build it beside run_study)
from study.plan import make_plan
from study.spec import Spec
from study.sweep import is_finished
from training import lock, rundir
from training.rundir import RunDirError

POLL_SECONDS = 2.0


def run_study(spec: Spec, root: str, options: Options, say=print) -> int:
    """Runs what the study lacks; returns the exit code (0 all done, 1 a job failed, 130 stopped).
    Bad input (the root, the dataset folder, runs trained with other settings, an absurd plan, a
    root another driver holds) is a SpecError or ValueError, raised before any job starts."""
    root_path = Path(root).absolute()
    checks.check_root(root_path)
    checks.check_dataset(spec)
    cpus = options.cpus_per_run or (os.cpu_count() if options.engine == "local" else 1)
    folder = spec.dataset.split(":", 1)[1] if spec.dataset.startswith("folder:") else None
    engine = make_engine(options.engine, root_path, options.ray_address, cpus, options.gpus_per_run,
                         Path(folder).expanduser().absolute() if folder else None)
    started = time.monotonic()
    tally = _Tally(say, cpus)
    try:
        # One driver per root: two would train the same runs and write the same records.
        with lock.hold(root_path / jobs.STATE_DIR, f"--root {root_path}",
                       "another study is running there: wait for it, or stop it (Ctrl-C; the same command "
                       "resumes)"):
            restore_logs(spec, root_path, say)
            say(f"study {spec.name} ({spec.path}) under {root_path} on {engine.describe()}")
            code = _run(spec, root_path, engine, tally, int(max(cpus, 1)), say)
    except KeyboardInterrupt:
        say("interrupted: stopping the running jobs (each saves its checkpoint); the same command resumes")
        for job, result in engine.stop():
            tally.ended(job, result)
        for job in tally.queued:  # queued by the study, never handed to the engine
            tally.ended(job, {"outcome": "not started"})
        code = 130
    finally:
        engine.close()
    if tally.started:
        tally.summary(time.monotonic() - started)
    return code


def _run(spec: Spec, root: Path, engine, tally: "_Tally", threads: int, say) -> int:
    base = dict(root=str(root), cwd=os.getcwd(), threads=threads)
    runs = spec.runs(root)
    checks.check_recorded(spec, root, runs)
    todo, train = [], []
    for run in runs:
        if _finished(spec, run):
            tally.skipped += 1
            continue
        train.append(run)
        todo.append(Job("train", run.name, work=TrainWork.from_json(spec.configs(run)), **base))
    hours, unknown = checks.planned_hours(spec, root, train)
    say(f"training: {len(todo)} run(s) to train, {tally.skipped} finished")
    if todo and unknown == len(todo):
        say("training: no estimate yet: no run under the root trains like these")
    elif todo:
        say(f"training: about {hours:.2f} h at the step rates of runs like them, one job at a time"
            + (f"; {unknown} run(s) without an estimate (no run under the root trains like them yet)"
               if unknown else ""))
    tally.started = True
    early = _EarlyEvaluations(spec, root, base, say) if isinstance(parse_target(spec.matching["target"]), float) \
        else None
    if early:
        for name in (run.name for run in runs if run not in train):  # logs of runs finished before this driver
            copy_log(spec, root, name, say)
    _schedule(engine, (early.next() if early and todo else []) + todo, tally, early.after if early else None)
    if tally.failed:
        say(f"{tally.failed} training run(s) failed: evaluating and reporting what finished")
    return _evaluate_and_report(spec, root, engine, tally, base, say, early.failed if early else set())


def _evaluate_and_report(spec: Spec, root: Path, engine, tally: "_Tally", base: dict, say,
                         failed: set = frozenset()) -> int:
    """``failed``: runs whose evaluation failed in this driver already (not tried again)."""
    cfg, options = spec.eval_config(root), spec.report_config()
    try:
        evaluations, done = _evaluations(spec, root, base)
    except RunDirError as err:  # e.g. no run finished: nothing to evaluate or report
        say(f"cannot evaluate: {err}")
        tally.report = "not made"
        return 1
    evaluations = [j for j in evaluations if j.name not in failed]
    say(f"evaluation: {len(evaluations)} run(s) to evaluate, {done} evaluated"
        + (f", {len(failed)} failed above" if failed else ""))
    if evaluations and cfg.source_run:  # the first crafts the source's adversarials, which the others read
        failed_before = tally.evaluations_failed
        _schedule(engine, evaluations[:1], tally)
        first, evaluations = evaluations[0], evaluations[1:]
        if tally.evaluations_failed > failed_before:  # the table runs' black-box attacks need what it was crafting
            for job in [j for j in evaluations if j.work.table_match is not None]:
                tally.ended(job, {"outcome": "not started", "error": f"its black-box attacks read the source's "
                                  f"adversarials, which the failed evaluation of {first.name} was crafting"})
            evaluations = [j for j in evaluations if j.work.table_match is None]
    _schedule(engine, evaluations, tally)
    if tally.evaluations_failed:  # the report would evaluate those runs again, and fail as they did
        say(f"report: not made: {tally.evaluations_failed} evaluation(s) failed (their lines say why); the same "
            f"command evaluates them again")
        tally.report = "not made"
        return 1
    _schedule(engine, [Job("report", "report", work=ReportWork(cfg, options), **base)], tally)
    return 1 if tally.failed else 0


def _evaluations(spec: Spec, root: Path, base: dict) -> tuple[list[Job], int]:
    """The evaluation jobs the finished runs under ``root`` lack, Table 2's first, and how many
    are stored already."""
    cfg, options = spec.eval_config(root), spec.report_config()
    plan = make_plan(str(root), cfg.source_run, options.match_benign, options.match_tolerance,
                     options.figure2_epochs, table_names=options.table_runs)
    # A run the spec still trains (see _finished) would be read while it trains.
    training = {run.name for run in spec.runs(root) if not _finished(spec, run)}
    work = [w for w in jobs_for(plan, cfg, options.curve_test_limit, options.autoattack_complete)
            if w.name not in training]
    todo = [Job("evaluate", w.name, work=w, **base) for w in work if stored_key(root, w.name) != w.key()]
    return todo, len(work) - len(todo)


def _finished(spec: Spec, run) -> bool:
    """Whether ``run`` has trained all the spec asks of it (its own config.json may say less: a
    longer ``matching.max_epochs`` trains it on)."""
    return is_finished(run.planned.run_dir, spec.configs(run)["train"]["epochs"], run.stop_at_benign)


class _EarlyEvaluations:
    """While a study with a fixed matching target trains, the evaluation of each finished run, one
    at a time, ahead of the training still queued (``_schedule``'s ``after``)."""

    def __init__(self, spec: Spec, root: Path, base: dict, say):
        self.spec, self.root, self.base, self.say = spec, root, base, say
        self.tried: set = set()  # evaluated, or failed, in this driver: not tried again before the end
        self.failed: set = set()
        self.running = False
        source = spec.source_name()
        self.source = (root / source) if source else None
        self.runs = {run.name: run for run in spec.runs(root)}

    def after(self, job: Job, result) -> list[Job]:
        """Called as each job ends: the next evaluation to run, if one is ready."""
        outcome = result.get("outcome") if isinstance(result, dict) else "failed"
        if job.kind == "evaluate":
            self.running = False
            if outcome == "failed":
                self.failed.add(job.name)
        if outcome in ("trained", "resumed", "evaluated"):
            copy_log(self.spec, self.root, job.name, self.say)
        return self.next()

    def next(self) -> list[Job]:
        """The next evaluation to run: none while one runs, or before the black-box source finished."""
        if self.running or (self.source is not None and not _finished(self.spec, self.runs[self.source.name])):
            return []
        try:
            todo, _ = _evaluations(self.spec, self.root, self.base)
        except RunDirError as err:
            self.say(f"evaluation: not yet ({err})")
            return []
        ready = [j for j in todo if j.name not in self.tried]
        if not ready:
            return []
        self.tried.add(ready[0].name)
        self.running = True
        return ready[:1]


def copy_log(spec: Spec, root: Path, name: str, say=print) -> None:
    """Run ``name``'s training log (config.json, metrics.jsonl) and its evaluation record, copied
    into ``[report] training_logs`` (if the spec names it), to commit: what a lost machine leaves."""
    logs = spec.report["training_logs"]
    if not logs or not (root / name / rundir.CONFIG_FILE).exists():
        return
    folder = Path(logs) / name
    sources = [root / name / rundir.CONFIG_FILE, root / name / rundir.METRICS_FILE, record_path(root, name)]
    changed = [p for p in sources if p.exists() and (not (folder / p.name).exists()
                                                     or (folder / p.name).read_bytes() != p.read_bytes())]
    if not changed:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for path in changed:
        shutil.copyfile(path, folder / path.name)
    say(f"{folder}: {', '.join(p.name for p in changed)} of run {name} copied, to commit")


def _schedule(engine, todo: list[Job], tally: "_Tally", after=None) -> None:
    """Runs ``todo`` on ``engine`` (as many at once as it takes), retrying a job whose process died.
    ``after(job, result)``: jobs to run next, ahead of the queue, as each job ends."""
    queue = collections.deque(todo)
    running: dict[tuple, Job] = {}
    watch = _Watch(tally.say)
    for job in todo:
        tally.say(f"{_label(job)}: queued")
    tally.queued = queue  # what a Ctrl-C leaves never started (run_study says so)
    while queue or running:
        while queue and len(running) < engine.capacity:
            job = queue.popleft()
            _submit(engine, job)
            running[job.kind, job.name] = job
        for job, result in engine.poll(POLL_SECONDS):
            if isinstance(result, Retrying):  # its process or node died: the engine runs it again
                tally.say(f"{_label(job)}: {result.why}; retrying, attempt {result.attempt} of {result.attempts}")
                tally.retried += 1
                continue
            running.pop((job.kind, job.name), None)
            watch.update(job)
            tally.ended(job, result)  # a JobDied: its process died every time the engine ran it
            for extra in reversed(after(job, result) if after else []):
                tally.say(f"{_label(extra)}: queued, ahead of the training still to do")
                queue.appendleft(extra)
        for job in running.values():
            watch.update(job)
    tally.queued = collections.deque()


def _submit(engine, job: Job) -> None:
    """Hands ``job`` to ``engine`` after replacing the job state an earlier driver left (a killed
    study's last attempt said "running" on a node that may be gone): lines about where it runs come
    from this submission's process only."""
    jobs.mark_submitted(job)
    engine.submit(job)


class _Watch:
    """Lines for what a running job's files say: where it started, each epoch it finishes."""

    def __init__(self, say):
        self.say = say
        self.seen: dict = {}  # (kind, name) -> (attempt announced, epochs announced)

    def update(self, job: Job) -> None:
        key = job.kind, job.name
        state = jobs.read_state(job.root, job.kind, job.name) or {}
        if key not in self.seen and job.kind == "train":  # a resumed run: its earlier epochs were said before
            self.seen[key] = (0, max((r["epoch"] for r in rundir.read_metrics(job.run_dir, "epoch_record")),
                                     default=0))
        attempt, epochs = self.seen.get(key, (0, 0))
        if state.get("state") == "running" and state.get("attempt", 1) > attempt:  # an engine's retry counts up
            attempt = state.get("attempt", 1)
            verb = {"train": "training", "evaluate": "evaluating", "report": "reporting"}[job.kind]
            self.say(f"{_label(job)}: {verb} on {state.get('node')} (pid {state.get('pid')})")
        if job.kind == "train":
            records = sorted(rundir.read_metrics(job.run_dir, "epoch_record"), key=lambda r: r["epoch"])
            for record in records:
                if record["epoch"] > epochs:
                    epochs = record["epoch"]
                    self.say(f"{_label(job)}: epoch {epochs}/{job.epochs}, benign accuracy "
                             f"{record['test_acc']:.3f}" + (f" on {state['node']}" if state.get("node") else ""))
        self.seen[key] = (attempt, epochs)


class _Tally:
    def __init__(self, say, cpus: float):
        self.say, self.cpus = say, cpus
        self.outcomes: collections.Counter = collections.Counter()
        self.skipped = self.failed = self.retried = 0
        self.seconds = self.cpu_seconds = 0.0
        self.started = False     # past the checks: a summary is due
        self.queued: collections.deque = collections.deque()  # the jobs not yet handed to the engine
        self.report = "not made"

    @property
    def evaluations_failed(self) -> int:
        return self.outcomes["evaluate:failed"]

    def ended(self, job: Job, result) -> None:
        if isinstance(result, JobDied):
            result = {"outcome": "failed", "error": result.why}
        outcome = result.get("outcome", "failed")
        outcome = "not started" if outcome == "cancelled" else outcome  # Ray's word for a task it never ran
        self.outcomes[f"{job.kind}:{outcome}"] += 1
        self.failed += outcome == "failed"
        self.seconds += result.get("seconds") or 0.0
        self.cpu_seconds += result.get("cpu_seconds") or 0.0
        if job.kind == "report":
            self.report = {"reported": "written", "stopped": "stopped", "not started": "not made"}.get(outcome, outcome)
        self.say(f"{_label(job)}: {_ended_text(job, result, outcome)}")

    def summary(self, wall_seconds: float) -> None:
        count = self.outcomes
        self.say(f"summary: {count['train:trained']} run(s) trained, {count['train:resumed']} resumed, {self.skipped} "
                 f"already finished, {count['train:failed']} failed, {count['train:stopped']} stopped"
                 + (f", {count['train:not started']} not started" if count["train:not started"] else "") + "; "
                 f"{count['evaluate:evaluated']} evaluated, {count['evaluate:failed']} failed, "
                 f"{count['evaluate:stopped']} stopped"
                 + (f", {count['evaluate:not started']} not started" if count["evaluate:not started"] else "")
                 + f"; report {self.report}; {self.retried} job(s) retried after their process died; wall time "
                 f"{wall_seconds / 3600:.2f} h; {self.seconds * self.cpus / 3600:.2f} CPU-hours reserved "
                 f"({self.cpu_seconds / 3600:.2f} used by the jobs' processes)")


def _ended_text(job: Job, result: dict, outcome: str) -> str:
    where = f" on {result['node']}" if result.get("node") else ""
    if outcome == "failed":
        return f"failed{where}: {result.get('error')}"
    lost = "what it trained since that checkpoint" if job.kind == "train" else "the attack it was running"
    deaf = (f" (it did not stop within {result['unanswered']:.0f} s and was ended: {lost} is lost)"
            if result.get("unanswered") is not None and outcome == "stopped" else "")
    if outcome == "stopped" and job.kind == "train":
        at = f"at step {result['step']}" if result.get("step") else "before its first checkpoint"
        return f"stopped{where} {at}{deaf}; the same command resumes it"
    if outcome == "stopped":  # an evaluation keeps every attack it finished in the run's cache
        return f"stopped{where}{deaf}; the same command runs it again, reusing the attacks it finished"
    if outcome == "not started":
        return "not started" + (f" ({result['error']})" if result.get("error") else "") + "; the same command runs it"
    extra = f" from step {result['resumed_from']}" if outcome == "resumed" else ""
    return f"done ({outcome}{extra}){where} in {result.get('seconds', 0):.0f} s"


def _label(job: Job) -> str:
    return {"train": "run", "evaluate": "evaluation of", "report": ""}[job.kind] + \
        ("" if job.kind == "report" else " ") + job.name


def restore_logs(spec: Spec, root: Path, say=print) -> None:
    """The runs ``root`` lacks that were evaluated, back as their committed training logs
    (``report.training_logs``): finished runs whose weights are gone, which the study does not
    train again. Those an earlier report evaluated (``report.prior_reports``) keep that report's
    numbers; those whose evaluation record was committed beside their log (``copy_log``: a machine
    lost mid-study) keep that record."""
    logs = spec.report["training_logs"]
    for record in sorted(Path(logs).glob(f"*/{record_path(root, '*').name}")) if logs else []:
        name = record.parent.name
        if record.name == record_path(root, name).name and not (root / name).exists() and \
                (record.parent / rundir.CONFIG_FILE).exists():
            (root / name).mkdir(parents=True)
            for path in (record.parent / rundir.CONFIG_FILE, record.parent / rundir.METRICS_FILE):
                shutil.copyfile(path, root / name / path.name)
            record_path(root, name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record, record_path(root, name))
            say(f"{root / name}: the training log and evaluation of run {name}, committed in {logs} (its weights "
                f"are gone)")
    for prior in spec.report["prior_reports"]:
        try:
            previous = json.loads(Path(prior).read_text())
        except (OSError, ValueError):
            continue  # the report says so, in one line, when it reads it
        runs = {r["run"] for e in previous["table"].values() for r in e["rows"]} | \
            {p["run"] for p in previous["curve_points"]}
        for run in sorted(runs):
            if logs and not (root / run).exists() and (Path(logs) / run).is_dir():
                shutil.copytree(Path(logs) / run, root / run)
                say(f"{root / run}: the training log of a run {prior} evaluated (its weights are gone)")
