"""What a run reports while it trains: TensorBoard events, metrics.jsonl and image grids.

Every record goes to both sinks with its global step, so TensorBoard and a script reading
``metrics.jsonl`` see the same numbers.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from training import writes
from training.rundir import METRICS_FILE, TENSORBOARD_DIR, drop_metrics_after, metrics_records, strict_json


class RunLog:
    """TensorBoard writer plus an append-only ``metrics.jsonl`` in the run directory; with no
    directory (a multi-worker run's non-chief task) it records nothing. Each (kind, step) record
    is written once; a write that fails (a full disk) is a one-line WriteFailed and leaves no
    half-written line."""

    _HINT = "free space and give the same command: training resumes from its last checkpoint"

    def __init__(self, run_dir: Path | None, resume_at: int = 0):
        """``resume_at``: the step the run starts from; the log's records past it (written by a
        part killed before its next checkpoint, and about to be trained again) are dropped, so
        every step is logged once."""
        self._run_dir = run_dir
        self._writer = None  # opened at the first summary: a process that trains nothing adds no event file
        self._jsonl = None
        self._logged = set()
        if run_dir is None:
            return
        drop_metrics_after(run_dir, resume_at)
        self._logged = {(r.get("kind"), r.get("step")) for r in metrics_records(run_dir)}
        path = run_dir / METRICS_FILE
        with writes.guarded(path, path.name, hint=self._HINT):
            self._jsonl = open(path, "a", encoding="utf-8")

    @property
    def writer(self):
        if self._writer is None:
            if self._run_dir is None:
                self._writer = tf.summary.create_noop_writer()
            else:
                folder = self._run_dir / TENSORBOARD_DIR
                with writes.guarded(folder, "TensorBoard events", hint=self._HINT):
                    self._writer = tf.summary.create_file_writer(str(folder))
        return self._writer

    def _summaries(self):
        return writes.guarded(self._run_dir / TENSORBOARD_DIR if self._run_dir else Path("."), "TensorBoard events",
                              hint=self._HINT)

    def scalars(self, step: int, values: dict, prefix: str) -> None:
        with self._summaries(), self.writer.as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(f"{prefix}/{key}", value)
        self.event(step, prefix, values)

    def event(self, step: int, kind: str, values: dict) -> None:
        if self._jsonl is None or (kind, int(step)) in self._logged:
            return
        record = {"step": int(step), "kind": kind, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in values.items()})
        line = json.dumps(strict_json(record), allow_nan=False) + "\n"
        path = self._run_dir / METRICS_FILE
        end = self._jsonl.tell()
        try:
            with writes.guarded(path, path.name, hint=self._HINT):
                self._jsonl.write(line)
                self._jsonl.flush()
        except writes.WriteFailed:
            with contextlib.suppress(OSError):  # no half line: cut the file back to its last whole record
                os.truncate(path, end)
            raise
        self._logged.add((kind, int(step)))

    def perturbation_grid(self, step: int, x, x_adv, name: str = "perturbations") -> None:
        with self._summaries(), self.writer.as_default(step=step):
            tf.summary.image(name, perturbation_grid(x, x_adv)[None], max_outputs=1)

    def close(self, quietly: bool = False) -> None:
        """Flushes and closes both sinks (again is harmless); ``quietly``: on an error path, where a
        second failure would hide the first."""
        writer, jsonl, self._writer, self._jsonl = self._writer, self._jsonl, None, None
        try:
            if writer is not None:
                with self._summaries():
                    writer.flush()
                    writer.close()
        except Exception:
            if not quietly:
                raise
        finally:
            if jsonl is not None:
                with contextlib.suppress(OSError):
                    jsonl.close()


def perturbation_grid(x, x_adv) -> np.ndarray:
    """One image: row 1 the inputs, row 2 the adversarial images, row 3 the perturbations
    amplified per example to fill [0, 1] around mid-grey (invisible at true scale)."""
    x = np.asarray(x, np.float32)
    delta = np.asarray(x_adv, np.float32) - x
    peak = np.abs(delta).reshape(len(delta), -1).max(axis=1).reshape(-1, 1, 1, 1)
    amplified = 0.5 + 0.5 * delta / np.maximum(peak, 1e-12)
    rows = [np.concatenate(list(images), axis=1) for images in (x, np.asarray(x_adv), amplified)]
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)


class MetricWindow:
    """Running means of a step's scalar metrics, and the per-example perturbation norms."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        self._norms: list[np.ndarray] = []
        self._started = time.perf_counter()
        self._examples = 0

    def restart_clock(self) -> None:
        """Excludes what came before (the step's tracing and compilation) from the throughput."""
        self._started = time.perf_counter()
        self._examples = 0

    def add(self, metrics: dict, batch_size: int) -> None:
        for key, value in metrics.items():
            if key == "delta_l2":
                self._norms.append(np.asarray(value))
            else:
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        self._examples += batch_size

    def summary(self) -> dict:
        out = {key: total / max(self._count, 1) for key, total in self._sums.items()}
        if self._norms:
            norms = np.concatenate(self._norms)
            out["delta_l2_mean"] = float(norms.mean())
            out["delta_l2_median"] = float(np.median(norms))
        elapsed = time.perf_counter() - self._started
        out["examples_per_second"] = self._examples / elapsed if elapsed > 0 else 0.0
        return out


def is_finite(value) -> bool:
    return math.isfinite(float(value))


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value
