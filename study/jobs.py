"""One unit of a study's work, run in a process of its own: a training run, a run's evaluation,
or the report. Both engines call ``run_job``: the local one in a child process
(``python -m study.jobs JOB.json RESULT.json``), the Ray one in a worker that serves one task and
exits (``max_calls=1``). A fresh process per job keeps TensorFlow's global state (graphs, the
mixed-precision policy, thread pools) from leaking from one run into the next, and makes killing a
job's process kill its training, nothing else.

A job is a typed, versioned record (``Job``: to_json / from_json), so the same job runs anywhere
and a reader of another version says so instead of misreading it; it writes its state to
``<root>/.study/<kind>-<name>.json`` (which attempt, where, since when, how it ended), where the
study's driver and ``--status`` read it, and its output to ``<root>/.study/logs/``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import data
from eval.config import EvalConfig
from study.evaluations import VERSION, EvaluationJob, _check_version
from study.report_config import ReportConfig
from training.config import RunConfig, TrainConfig

STATE_DIR = ".study"
# A retried training job may start while its killed predecessor's lock is not yet released (a
# node that is going away): it waits this long for the lock before failing.
LOCK_WAIT_SECONDS = 120.0
KINDS = ("train", "evaluate", "report")


@dataclasses.dataclass(frozen=True)
class TrainWork:
    """A training run's configs, as ``training.loop.train`` takes them; ``flags``: config.json's record."""
    data: data.DataConfig
    train: TrainConfig
    defense: dict                      # DefenseConfig.as_dict(): the defense and its own settings
    run: RunConfig
    flags: dict

    @classmethod
    def from_json(cls, record: dict) -> "TrainWork":
        return cls(data.DataConfig(**record["data"]), TrainConfig(**record["train"]), dict(record["defense"]),
                   RunConfig(**record["run"]), dict(record["flags"]))


@dataclasses.dataclass(frozen=True)
class ReportWork:
    """The report's evaluation settings and options (``--mode report``'s flags, as the spec gives them)."""
    evaluation: EvalConfig
    options: ReportConfig

    @classmethod
    def from_json(cls, record: dict) -> "ReportWork":
        return cls(_typed(EvalConfig, record["evaluation"]), _typed(ReportConfig, record["options"]))


@dataclasses.dataclass(frozen=True)
class Job:
    kind: str                          # train | evaluate | report
    name: str
    root: str
    cwd: str                           # paths a spec gives relative (prior reports) mean what they meant here
    threads: int
    work: TrainWork | EvaluationJob | ReportWork
    attempt: int = 1
    avoid: str | None = None           # a node it died on: placed elsewhere when there is room
    version: int = VERSION

    @property
    def run_dir(self) -> Path | None:
        return Path(self.work.run.run_dir) if self.kind == "train" else None

    @property
    def epochs(self) -> int | None:
        return self.work.train.epochs if self.kind == "train" else None

    def to_json(self) -> dict:
        record = dataclasses.asdict(dataclasses.replace(self, work=None))
        record["work"] = self.work.to_json() if self.kind == "evaluate" else \
            json.loads(json.dumps(dataclasses.asdict(self.work)))
        return record

    @classmethod
    def from_json(cls, record: dict) -> "Job":
        _check_version(record, "job")
        work = {"train": TrainWork, "evaluate": EvaluationJob, "report": ReportWork}[record["kind"]]
        return cls(record["kind"], record["name"], record["root"], record["cwd"], int(record["threads"]),
                   work.from_json(record["work"]), int(record.get("attempt") or 1), record.get("avoid"))


def _typed(cls, values: dict):
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


def state_path(root: str | Path, kind: str, name: str) -> Path:
    return Path(root) / STATE_DIR / f"{kind}-{name}.json"


def log_path(root: str | Path, kind: str, name: str) -> Path:
    return Path(root) / STATE_DIR / "logs" / f"{kind}-{name}.log"


def read_state(root: str | Path, kind: str, name: str) -> dict | None:
    try:
        return json.loads(state_path(root, kind, name).read_text())
    except (OSError, ValueError):
        return None


def mark_submitted(job: Job) -> None:
    """The driver's record that ``job`` is handed to an engine: no process runs it yet."""
    _write_state(job, {"state": "submitted", "attempt": 0, "submitted": time.time()})


def set_threads(threads: int) -> None:
    """The same TensorFlow thread counts wherever a job runs (Ray sets OMP_NUM_THREADS to a task's
    CPUs; TensorFlow would size its pools by the machine's cores): the intra-op pool splits the
    work of one operation, and results are the same bit for bit only at the same count. Before
    TensorFlow starts its runtime."""
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if threads == 1 else "2"


def run_job(job: Job, node: str | None = None, node_id: str | None = None) -> dict:
    """Runs ``job`` and returns {"outcome": trained | resumed | stopped | skipped | evaluated |
    reported | failed, "error", "node", "pid", "seconds", "cpu_seconds", ...}; never raises for the
    job's own failure (a dead process is the engine's to see). ``node``: where the engine placed it."""
    set_threads(job.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.chdir(job.cwd)  # paths a spec gives relative (prior reports) mean what they meant to the driver
    _redirect_output(log_path(job.root, job.kind, job.name))
    where = {"node": node or socket.gethostname(), "node_id": node_id,
             "host": socket.gethostname(), "pid": os.getpid(), "attempt": job.attempt}
    started = time.time()
    _write_state(job, {**where, "state": "running", "started": started})
    say = _printer()
    try:
        result = {"train": _train, "evaluate": _evaluate, "report": _report}[job.kind](job, say)
    except KeyboardInterrupt:
        result = {"outcome": "stopped", "error": "interrupted"}
    except Exception as err:  # the job failed; the study reports why and goes on
        result = {"outcome": "failed", "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result.update(where, seconds=round(time.time() - started, 1),
                  cpu_seconds=round(sum(u.ru_utime + u.ru_stime for u in usage), 1))
    _write_state(job, {**result, "state": "ended", "started": started})
    sys.stdout.flush()
    return result


def _train(job: Job, say) -> dict:
    from study.sweep import progress
    from training.config import DefenseConfig
    from training.loop import TrainingError, train

    work = job.work
    run_dir = Path(work.run.run_dir)
    before = progress(run_dir, work.train.epochs, work.run.stop_at_benign)
    if before["state"] == "finished":
        return {"outcome": "skipped", "step": None}
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            result = train(work.data, work.train, DefenseConfig(**work.defense), work.run, flags=work.flags, say=say)
            break
        except TrainingError as err:
            return {"outcome": "failed", "error": str(err), "step": before["step"]}
        except KeyboardInterrupt:  # the study is stopping: training saved a checkpoint first
            now = progress(run_dir, work.train.epochs, work.run.stop_at_benign)
            return {"outcome": "stopped", "error": "interrupted", "step": now["step"]}
        except ValueError as err:
            if not _locked(err) or time.monotonic() > deadline:
                raise
            say(f"{err}: waiting for it to be released")
            time.sleep(2.0)
    outcome = ("resumed" if before["step"] else "trained") if result.finished else "stopped"
    return {"outcome": outcome, "step": result.step, "resumed_from": before["step"]}


def _locked(err: Exception) -> bool:
    """Whether training refused because another process holds the run directory's lock (our own
    killed attempt, not yet dead)."""
    from training import lock
    return isinstance(err, lock.DirectoryLocked)


def _evaluate(job: Job, say) -> dict:
    from study.evaluations import evaluated
    evaluated(job.root, job.work, say)
    return {"outcome": "evaluated"}


def _report(job: Job, say) -> dict:
    from study.report import build_report
    options = job.work.options
    report = build_report(job.root, job.work.evaluation, options.match_benign, options.match_tolerance,
                          options.curve_test_limit, say=say, figure2_epochs=options.figure2_epochs,
                          autoattack_complete=options.autoattack_complete, prior_reports=options.prior_report,
                          dataset_label=options.dataset_label, table_names=options.table_runs)
    return {"outcome": "reported", "report": str(Path(job.root) / "report" / "report.md"),
            "runs": len(report.get("curve_points", []))}


def _write_state(job: Job, state: dict) -> None:
    path = state_path(job.root, job.kind, job.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


def _redirect_output(path: Path) -> None:
    """This process's stdout and stderr (TensorFlow's C++ lines too) into the job's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _printer():
    def say(*parts):
        print(*parts, flush=True)
    return say


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """``python -m study.jobs JOB.json RESULT.json``: the local engine's child process."""
    signal.signal(signal.SIGTERM, _interrupt)  # the driver's stop: save a checkpoint, as Ctrl-C does
    job = Job.from_json(json.loads(Path(argv[1]).read_text()))
    result = run_job(job)
    tmp = Path(argv[2] + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, argv[2])
    return 130 if result.get("error") == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
