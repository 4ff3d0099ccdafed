"""One unit of a study's work, run in a process of its own: a training run, a run's evaluation,
or the report. Both engines call ``run_job``: the local one in a child process
(``python -m study.jobs JOB.json RESULT.json``), the Ray one in a worker that serves one task and
exits (``max_calls=1``). A fresh process per job keeps TensorFlow's global state (graphs, the
mixed-precision policy, thread pools) from leaking from one run into the next, and makes killing a
job's process kill its training, nothing else.

A job is a plain dict (JSON), so the same job runs anywhere; it writes its state to
``<root>/.study/<kind>-<name>.json`` (which attempt, where, since when, how it ended), where the
study's driver and ``--status`` read it, and its output to ``<root>/.study/logs/``.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

STATE_DIR = ".study"
# A retried training job may start while its killed predecessor's lock is not yet released (a
# node that is going away): it waits this long for the lock before failing.
LOCK_WAIT_SECONDS = 120.0


def state_path(root: str | Path, kind: str, name: str) -> Path:
    return Path(root) / STATE_DIR / f"{kind}-{name}.json"


def log_path(root: str | Path, kind: str, name: str) -> Path:
    return Path(root) / STATE_DIR / "logs" / f"{kind}-{name}.log"


def read_state(root: str | Path, kind: str, name: str) -> dict | None:
    try:
        return json.loads(state_path(root, kind, name).read_text())
    except (OSError, ValueError):
        return None


def set_threads(threads: int) -> None:
    """The same TensorFlow thread counts wherever a job runs (Ray sets OMP_NUM_THREADS to a task's
    CPUs; TensorFlow would size its pools by the machine's cores): the intra-op pool splits the
    work of one operation, and results are the same bit for bit only at the same count. Before
    TensorFlow starts its runtime."""
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if threads == 1 else "2"


def run_job(job: dict) -> dict:
    """Runs ``job`` and returns {"outcome": trained | resumed | stopped | skipped | evaluated |
    reported | failed, "error", "node", "pid", "seconds", "cpu_seconds", ...}; never raises for the
    job's own failure (a dead process is the engine's to see)."""
    set_threads(job["threads"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.chdir(job["cwd"])  # paths a spec gives relative (prior reports) mean what they meant to the driver
    _redirect_output(log_path(job["root"], job["kind"], job["name"]))
    where = {"node": job.get("node") or socket.gethostname(), "node_id": job.get("node_id"),
             "host": socket.gethostname(), "pid": os.getpid(), "attempt": job.get("attempt", 1)}
    started = time.time()
    _write_state(job, {**where, "state": "running", "started": started})
    say = _printer()
    try:
        result = {"train": _train, "evaluate": _evaluate, "report": _report}[job["kind"]](job, say)
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


def _train(job: dict, say) -> dict:
    import data
    from study.sweep import progress
    from training.config import DefenseConfig, RunConfig, TrainConfig
    from training.loop import TrainingError, train

    configs = job["configs"]
    run_cfg = RunConfig(**configs["run"])
    train_cfg = TrainConfig(**configs["train"])
    before = progress(Path(run_cfg.run_dir), train_cfg.epochs, run_cfg.stop_at_benign)
    if before["state"] == "finished":
        return {"outcome": "skipped", "step": None}
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            result = train(data.DataConfig(**configs["data"]), train_cfg, DefenseConfig(**configs["defense"]),
                           run_cfg, flags=configs["flags"], say=say)
            break
        except TrainingError as err:
            return {"outcome": "failed", "error": str(err), "step": before["step"]}
        except KeyboardInterrupt:  # the study is stopping: training saved a checkpoint first
            now = progress(Path(run_cfg.run_dir), train_cfg.epochs, run_cfg.stop_at_benign)
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


def _evaluate(job: dict, say) -> dict:
    _build_report(job, say, only=job["name"])
    path = Path(job["root"]) / STATE_DIR / f"evaluated-{job['name']}.json"
    path.write_text(json.dumps({"key": job["key"]}) + "\n")
    return {"outcome": "evaluated"}


def _report(job: dict, say) -> dict:
    report = _build_report(job, say)
    return {"outcome": "reported", "report": str(Path(job["root"]) / "report" / "report.md"),
            "runs": len(report.get("curve_points", []))}


def _build_report(job: dict, say, only: str | None = None) -> dict:
    import dataclasses
    from eval.config import EvalConfig
    from study.report import build_report

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in job["eval"].items()}
    cfg = EvalConfig(**{f.name: values[f.name] for f in dataclasses.fields(EvalConfig) if f.name in values})
    options = job["report"]
    return build_report(job["root"], cfg, options["match_benign"], options["tolerance"], options["curve_test_limit"],
                        say=say, figure2_epochs=options["figure2_epochs"],
                        autoattack_complete=options["autoattack_complete"],
                        prior_reports=options["prior_reports"], only=only)


def _write_state(job: dict, state: dict) -> None:
    path = state_path(job["root"], job["kind"], job["name"])
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
    job = json.loads(Path(argv[1]).read_text())
    result = run_job(job)
    tmp = Path(argv[2] + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, argv[2])
    return 130 if result.get("error") == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
