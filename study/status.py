"""``run.py --mode study --status``: where a study stands, training nothing.

Each run: finished, how far it got, whether a process holds it now and where (its lock), and the
training hours it has left at the step rate of a run under the root that trains as it would
(``study.sweep.estimate``); then the evaluations done, the attack hours left at the evaluated runs'
means, and the report. Reads files only, so it
answers for a study running on a cluster from any machine that mounts its root.
"""
from __future__ import annotations

import socket
from pathlib import Path

import data
from study import jobs
from study.evaluations import read_record
from study.report_tables import row_attack_seconds
from study.runner import restore_logs
from study.spec import Spec, SpecError
from study.sweep import estimate
from training import lock
from training.config import DefenseConfig, TrainConfig


def show_status(spec: Spec, root: str, say=print) -> None:
    root_path = Path(root).absolute()
    if root_path.exists() and not root_path.is_dir():
        raise SpecError(f"--root {root_path} is a file, not a directory: give the folder the study's runs live in")
    if root_path.is_dir():  # runs an earlier report evaluated are finished, whatever machine this is
        restore_logs(spec, root_path, say)
    runs = spec.runs(root_path)
    left, unknown, running, finished = 0.0, 0, 0, 0
    for i, run in enumerate(runs, 1):
        configs = spec.configs(run)
        state, text, hours = estimate(root_path, run.planned, run.arm.sweep.name if run.arm else None,
                                      data.DataConfig(**configs["data"]), TrainConfig(**configs["train"]),
                                      DefenseConfig(**configs["defense"]), run.stop_at_benign)
        holder = lock.holder(run.planned.run_dir) if run.planned.run_dir.is_dir() else None
        if holder:
            running += 1
            attempt = jobs.read_state(root_path, "train", run.name) or {}
            if state == "not started":  # its process holds it, before its first checkpoint
                text = "started, no checkpoint yet" + text[len("not started"):]
            text += f"; running now ({holder}" + (f", node {attempt['node']}" if attempt.get("node") else "") + ")"
        finished += state == "finished"
        unknown += hours is None
        left += hours or 0.0
        say(f"[{i}/{len(runs)}] {run.name}: {text}")
    evaluated = sorted(p.name for p in (root_path / jobs.STATE_DIR).glob("evaluated-*.json"))
    evaluating = _evaluating(root_path)
    driver = lock.holder(root_path / jobs.STATE_DIR) if (root_path / jobs.STATE_DIR).is_dir() else None
    report = root_path / "report" / "report.md"
    say(f"status: {finished} of {len(runs)} run(s) trained, {running} running now, about {left:.2f} h of training "
        f"left" + (f" and {unknown} run(s) without an estimate" if unknown else "") + f" (at the runs' step rates, "
        f"one job at a time; divide by the jobs that run at once); {len(evaluated)} run(s) evaluated"
        + _evaluation_left(spec, root_path)
        + (f", evaluating {', '.join(evaluating)} now" if evaluating else "") + "; report "
        + (f"at {report}" if report.exists() else "not written yet")
        + (f"; the study's driver is {driver}" if driver else "; no driver is running"))


def _evaluation_left(spec: Spec, root: Path) -> str:
    """", about 3.1 h of attacks left (...)": the runs without an evaluation record at the evaluated
    ones' means: a Table 2 run's every attack, a curve run's CW (the table runs' CW on the same
    images). Empty until a table run is evaluated."""
    table_names, source = set(spec.table_names()), spec.source_name()
    table_seconds, cw_seconds, table_left, curve_left = [], [], 0, 0
    for run in spec.runs(root):
        if run.name == source:  # attacked only through the runs it is the black-box source of
            continue
        record, in_table = read_record(root, run.name), run.name in table_names
        if record is None:
            table_left += in_table
            curve_left += not in_table
        elif in_table and record.table_row:
            table_seconds.append(sum(row_attack_seconds(record.table_row).values()))
            cw_seconds.append(row_attack_seconds(record.table_row).get("cw", 0.0))
    if not table_seconds or not table_left + curve_left:
        return ""
    per_table, per_curve = sum(table_seconds) / len(table_seconds), sum(cw_seconds) / len(cw_seconds)
    hours = (table_left * per_table + curve_left * per_curve) / 3600
    return (f", about {hours:.1f} h of attacks left ({table_left} table run(s) at {per_table / 60:.0f} min, "
            f"{curve_left} curve run(s) at {per_curve / 60:.0f} min: the evaluated runs' means)")


def _evaluating(root: Path) -> list[str]:
    """The runs whose evaluation a live process is running (its job state says so; on this host its
    PID is checked, a state left by a killed process is not counted)."""
    names = []
    for path in sorted((root / jobs.STATE_DIR).glob("evaluate-*.json")):
        name = path.stem[len("evaluate-"):]
        state = jobs.read_state(root, "evaluate", name) or {}
        if state.get("state") != "running":
            continue
        if state.get("host") == socket.gethostname() and not lock.alive(int(state.get("pid") or 0)):
            continue
        names.append(name)
    return names

