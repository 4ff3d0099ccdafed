"""``run.py --mode study``: a spec's missing training runs, then its missing evaluations, then its
report, each job on an engine (``study.engines``), with one line per job as its state changes.

    python run.py --mode study --spec studies/smoke.toml --root runs/smoke [--engine ray]

Order: training first (a report's matching target, "lowest" or "clean", depends on every run's
final accuracy, and which value is a defense's table point on which runs finished), then one
evaluation job per run (the first alone when there is a black-box source, so that its
adversarials are crafted once and cached before the others read them), then the report, which
finds every attack cached. Finished work is skipped: a finished run by its log, an evaluation by
its key (``study.evaluations``). Stopped work resumes: a run from its last checkpoint. A job whose
process or node dies is retried (``MAX_ATTEMPTS``), away from the node it died on.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from study import jobs
from study.engines import JobDied, make_engine
from study.options import Options  # noqa: F401 (re-exported: callers build it beside run_study)
from study.spec import Spec
from study.sweep import is_finished
from training import rundir
from training.rundir import RunDirError

MAX_ATTEMPTS = 3
POLL_SECONDS = 2.0


def run_study(spec: Spec, root: str, options: Options, say=print) -> int:
    """Runs what the study lacks; returns the exit code (0 all done, 1 a job failed, 130 stopped)."""
    root_path = Path(root).absolute()
    cpus = options.cpus_per_run or (os.cpu_count() if options.engine == "local" else 1)
    folder = spec.dataset.split(":", 1)[1] if spec.dataset.startswith("folder:") else None
    engine = make_engine(options.engine, root_path, options.ray_address, cpus, options.gpus_per_run,
                         Path(folder).expanduser().absolute() if folder else None)
    started = time.monotonic()
    tally = _Tally(say, cpus)
    try:
        root_path.mkdir(parents=True, exist_ok=True)  # an engine that cannot start leaves nothing behind
        restore_logs(spec, root_path, say)
        say(f"study {spec.name} ({spec.path}) under {root_path} on {engine.describe()}")
        code = _run(spec, root_path, engine, tally, int(max(cpus, 1)), say)
    except KeyboardInterrupt:
        say("interrupted: stopping the running jobs (each saves its checkpoint); the same command resumes")
        for job, result in engine.stop():
            tally.ended(job, result)
        code = 130
    finally:
        engine.close()
    tally.summary(time.monotonic() - started)
    return code


def _run(spec: Spec, root: Path, engine, tally: "_Tally", threads: int, say) -> int:
    base = {"root": str(root), "cwd": os.getcwd(), "threads": threads}
    todo = []
    for run in spec.runs(root):
        configs = spec.configs(run)
        epochs = configs["train"]["epochs"]
        if is_finished(run.planned.run_dir, epochs, run.stop_at_benign):
            tally.skipped += 1
            continue
        todo.append({**base, "kind": "train", "name": run.name, "configs": configs, "epochs": epochs})
    say(f"training: {len(todo)} run(s) to train, {tally.skipped} finished")
    _schedule(engine, todo, tally)
    if tally.failed:
        say(f"{tally.failed} training run(s) failed: evaluating and reporting what finished")

    cfg = spec.eval_config(root)
    evaluation = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    report = {"match_benign": spec.matching["target"], "tolerance": spec.matching["tolerance"],
              **{k: spec.report[k] for k in ("curve_test_limit", "figure2_epochs", "autoattack_complete",
                                             "prior_reports")}}
    from study.evaluations import evaluation_keys
    try:
        keys = evaluation_keys(root, cfg, report)
    except RunDirError as err:  # e.g. no run finished: nothing to evaluate or report
        say(f"cannot evaluate: {err}")
        return 1
    evaluations = [{**base, "kind": "evaluate", "name": name, "key": key, "eval": evaluation, "report": report}
                   for name, key in keys.items() if _evaluated_key(root, name) != key]
    say(f"evaluation: {len(evaluations)} run(s) to evaluate, {len(keys) - len(evaluations)} evaluated")
    if evaluations and cfg.source_run:  # the first crafts the source's adversarials for all
        _schedule(engine, evaluations[:1], tally)
        evaluations = evaluations[1:]
    _schedule(engine, evaluations, tally)
    _schedule(engine, [{**base, "kind": "report", "name": "report", "eval": evaluation, "report": report}], tally)
    return 1 if tally.failed else 0


def _evaluated_key(root: Path, name: str) -> str | None:
    try:
        return json.loads((root / jobs.STATE_DIR / f"evaluated-{name}.json").read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def _schedule(engine, todo: list[dict], tally: "_Tally") -> None:
    """Runs ``todo`` on ``engine`` (as many at once as it takes), retrying a job whose process died."""
    queue = collections.deque(todo)
    running: dict[tuple, dict] = {}
    watch = _Watch(tally.say)
    for job in todo:
        tally.say(f"{_label(job)}: queued")
    while queue or running:
        while queue and len(running) < engine.capacity:
            job = queue.popleft()
            engine.submit(job, avoid=job.get("avoid"))
            running[job["kind"], job["name"]] = job
        for job, result in engine.poll(POLL_SECONDS):
            running.pop((job["kind"], job["name"]), None)
            watch.update(job)
            if isinstance(result, JobDied):
                state = jobs.read_state(job["root"], job["kind"], job["name"]) or {}
                attempt = job.get("attempt", 1)
                where = f" on {state['node']}" if state.get("node") else ""
                if attempt < MAX_ATTEMPTS:
                    tally.say(f"{_label(job)}: its process died{where} ({result.why}); retrying, attempt "
                              f"{attempt + 1} of {MAX_ATTEMPTS}" + (", on another node if there is one"
                                                                    if engine.nodes > 1 else ""))
                    tally.retried += 1
                    queue.appendleft({**job, "attempt": attempt + 1, "avoid": state.get("node_id")})
                    continue
                result = {"outcome": "failed", "error": f"its process died {attempt} times{where}: {result.why}",
                          "node": state.get("node")}
            tally.ended(job, result)
        for job in running.values():
            watch.update(job)


class _Watch:
    """Lines for what a running job's files say: where it started, each epoch it finishes."""

    def __init__(self, say):
        self.say = say
        self.seen: dict = {}  # (kind, name) -> (attempt announced, epochs announced)

    def update(self, job: dict) -> None:
        key = job["kind"], job["name"]
        state = jobs.read_state(job["root"], job["kind"], job["name"]) or {}
        if key not in self.seen and job["kind"] == "train":  # a resumed run: its earlier epochs were said before
            self.seen[key] = (0, max((r["epoch"] for r in rundir.read_metrics(
                Path(job["configs"]["run"]["run_dir"]), "epoch_record")), default=0))
        attempt, epochs = self.seen.get(key, (0, 0))
        if state.get("state") == "running" and state.get("attempt", 1) == job.get("attempt", 1) > attempt:
            attempt = job.get("attempt", 1)
            verb = {"train": "training", "evaluate": "evaluating", "report": "reporting"}[job["kind"]]
            self.say(f"{_label(job)}: {verb} on {state.get('node')} (pid {state.get('pid')})")
        if job["kind"] == "train":
            run_dir = Path(job["configs"]["run"]["run_dir"])
            records = sorted(rundir.read_metrics(run_dir, "epoch_record"), key=lambda r: r["epoch"])
            for record in records:
                if record["epoch"] > epochs:
                    epochs = record["epoch"]
                    self.say(f"{_label(job)}: epoch {epochs}/{job['epochs']}, benign accuracy "
                             f"{record['test_acc']:.3f}" + (f" on {state['node']}" if state.get("node") else ""))
        self.seen[key] = (attempt, epochs)


class _Tally:
    def __init__(self, say, cpus: float):
        self.say, self.cpus = say, cpus
        self.outcomes: collections.Counter = collections.Counter()
        self.skipped = self.failed = self.retried = 0
        self.seconds = self.cpu_seconds = 0.0

    def ended(self, job: dict, result) -> None:
        if isinstance(result, JobDied):
            result = {"outcome": "failed", "error": result.why}
        outcome = result.get("outcome", "failed")
        self.outcomes[f"{job['kind']}:{outcome}"] += 1
        self.failed += outcome == "failed"
        self.seconds += result.get("seconds") or 0.0
        self.cpu_seconds += result.get("cpu_seconds") or 0.0
        where = f" on {result['node']}" if result.get("node") else ""
        if outcome == "failed":
            self.say(f"{_label(job)}: failed{where}: {result.get('error')}")
        elif outcome == "stopped":
            at = f"at step {result['step']}" if result.get("step") else "before its first checkpoint"
            self.say(f"{_label(job)}: stopped{where} {at}; the same command resumes it")
        elif outcome == "cancelled":
            self.say(f"{_label(job)}: not started; the same command runs it")
        else:
            extra = f" from step {result['resumed_from']}" if outcome == "resumed" else ""
            self.say(f"{_label(job)}: done ({outcome}{extra}){where} in {result.get('seconds', 0):.0f} s")

    def summary(self, wall_seconds: float) -> None:
        count = self.outcomes
        trained = count["train:trained"]
        resumed = count["train:resumed"]
        self.say(f"summary: {trained} run(s) trained, {resumed} resumed, {self.skipped} already finished, "
                 f"{count['train:failed']} failed, {count['train:stopped']} stopped; {count['evaluate:evaluated']} "
                 f"evaluated; {self.retried} job(s) retried after their process died; wall time "
                 f"{wall_seconds / 3600:.2f} h; {self.seconds * self.cpus / 3600:.2f} CPU-hours reserved "
                 f"({self.cpu_seconds / 3600:.2f} used by the jobs' processes)")


def _label(job: dict) -> str:
    return {"train": "run", "evaluate": "evaluation of", "report": ""}[job["kind"]] + \
        ("" if job["kind"] == "report" else " ") + job["name"]


def restore_logs(spec: Spec, root: Path, say=print) -> None:
    """The runs an earlier report evaluated (``report.prior_reports``) that ``root`` lacks, back as
    their committed training logs (``report.training_logs``): finished runs whose weights are
    gone, which the study does not train again and whose numbers that report keeps."""
    logs = spec.report["training_logs"]
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
