"""One run's evaluation, the study's unit of evaluation work: a job (``EvaluationJob``, a frozen,
versioned record that crosses process boundaries as JSON) and the function that does it
(``evaluate_run``), returning a ``RunEvaluation`` record.

A job says everything the evaluation needs and nothing it must decide: which epoch its Table 2 row
attacks (matched once, by ``study.plan.make_plan``), whether it has a Figure 5 point, which epochs
of it Figure 2 draws, the attacks and their settings, the black-box source. Both engines run jobs
(``study.jobs``), and ``--mode report`` runs them in its own process; either way ``evaluated``
stores the record under ``<root>/.study/evaluated-<run>.json`` beside its key, and the report reads
the records. The key (``EvaluationJob.key``) changes with the weights attacked, the matched epoch,
the attacks and the source; the same key means nothing changed, so the stored record stands.
Attack outcomes are cached per run besides (``eval.suite``): a job whose key changed recomputes
only what is new.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from eval.config import DEFAULT_ATTACKS, EvalConfig
from study.matching import Match
from training.rundir import RunDirError

VERSION = 1
RECORDS = ".study"  # = study.jobs.STATE_DIR (not imported: jobs imports this module)
TABLE_ATTACKS = DEFAULT_ATTACKS  # the paper's Table 2 columns
# What else a report runs on the table runs when --attacks names it: the field's standard evaluation.
EXTRA_ATTACKS = ("autoattack",)


class RecordError(ValueError):
    """A job or record of another version or shape than this code's; one line."""


def report_attacks(cfg: EvalConfig) -> EvalConfig:
    """``cfg`` with the attacks a report runs: Table 2's (the defaults when it names none of them),
    then AutoAttack if it names it."""
    table = tuple(a for a in cfg.attacks if a in TABLE_ATTACKS) or TABLE_ATTACKS
    return dataclasses.replace(cfg, attacks=table + tuple(a for a in EXTRA_ATTACKS if a in cfg.attacks))


@dataclasses.dataclass(frozen=True)
class EvaluationJob:
    run_dir: str
    table_match: Match | None          # its Table 2 row at this match; None: not a table run
    table_epoch: int | None            # the weights that row attacks (None: the final ones)
    curve: bool                        # a Figure 5 point: CW on the final weights
    figure2_epochs: tuple[int, ...]    # Figure 2: CW at these kept epochs
    evaluation: EvalConfig             # the attacks and their settings, the source, the test subset
    curve_test_limit: int = 0          # CW for the curves on this many test images (0: all)
    autoattack_complete: int = 0       # the standard AutoAttack's other attacks on this many
    version: int = VERSION

    @property
    def name(self) -> str:
        return Path(self.run_dir).name

    def to_json(self) -> dict:
        record = dataclasses.asdict(self)
        record["table_match"] = self.table_match.to_json() if self.table_match else None
        return json.loads(json.dumps(record))  # tuples as lists: what from_json reads back

    @classmethod
    def from_json(cls, record: dict) -> "EvaluationJob":
        _check_version(record, "evaluation job")
        fields = {f.name for f in dataclasses.fields(EvalConfig)}
        evaluation = EvalConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in record["evaluation"].items() if k in fields})
        match = record["table_match"]
        return cls(record["run_dir"], Match.from_json(match) if match else None, record["table_epoch"],
                   bool(record["curve"]), tuple(record["figure2_epochs"]), evaluation,
                   int(record["curve_test_limit"]), int(record["autoattack_complete"]))

    def key(self) -> str:
        """Changes whenever the evaluation would: the weights, the matched epoch, the attacks and
        their settings, the source (the key of studies made before jobs were records, kept so that
        their evaluations stand)."""
        cfg, run_dir = self.evaluation, Path(self.run_dir)
        parts = {"attacks": {a: cfg.attack_settings(a) for a in sorted(set(cfg.attacks) | {"masking"})},
                 "test_limit": cfg.test_limit, "source": _fingerprint(Path(cfg.source_run)) if cfg.source_run else None,
                 "curve_test_limit": self.curve_test_limit, "autoattack_complete": self.autoattack_complete}
        if self.table_match is not None:
            parts["table"] = [self.table_epoch, _fingerprint(run_dir, self.table_epoch)]
        if self.curve:
            parts["curve"] = _fingerprint(run_dir)
        if self.figure2_epochs:
            parts["figure2"] = [[e, _fingerprint(run_dir, e)] for e in self.figure2_epochs]
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class RunEvaluation:
    """What one run's evaluation found: its Table 2 row's attack outcomes, its Figure 5 CW
    summary and its Figure 2 points ({"epoch", "cw"}); the report adds what the plan knows (the
    match, the group, the recorded accuracies)."""
    run: str
    key: str
    table_row: dict | None
    curve_cw: dict | None
    figure2: tuple[dict, ...] = ()
    version: int = VERSION

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_json(cls, record: dict) -> "RunEvaluation":
        _check_version(record, "evaluation record")
        return cls(record["run"], record["key"], record["table_row"], record["curve_cw"],
                   tuple(record["figure2"]))


def _check_version(record: dict, what: str) -> None:
    if not isinstance(record, dict) or record.get("version") != VERSION:
        found = record.get("version") if isinstance(record, dict) else type(record).__name__
        raise RecordError(f"an {what} of version {found}, this code reads version {VERSION}")


def jobs_for(plan, cfg: EvalConfig, curve_test_limit: int, autoattack_complete: int) -> list[EvaluationJob]:
    """One job per run of ``plan`` that has weights to attack, Table 2's runs first (with a black-box
    source, the first crafts its adversarials, which the others then read from its cache)."""
    cfg = report_attacks(cfg)
    table = {m.run.name for members in plan.table_runs.values() for m in members}
    curve = {m.run.name for m in plan.curve_runs()}
    members = [m for ms in plan.groups.values() for m in ms if m.has_weights]
    out = []
    for member in sorted(members, key=lambda m: m.run.name not in table):
        name = member.run.name
        in_table = name in table
        figure2 = tuple(plan.figure2_epochs) if member is plan.figure2 else ()
        if not (in_table or name in curve or figure2):
            continue
        out.append(EvaluationJob(str(member.run.run_dir), plan.matches[name] if in_table else None,
                                 plan.table_epoch(member) if in_table else None, name in curve, figure2,
                                 dataclasses.replace(cfg, run_dirs=(str(member.run.run_dir),)),
                                 curve_test_limit, autoattack_complete))
    return out


def record_path(root: str | Path, name: str) -> Path:
    return Path(root) / RECORDS / f"evaluated-{name}.json"


def stored_key(root: str | Path, name: str) -> str | None:
    """The key of the evaluation stored for run ``name`` (None: none, or unreadable)."""
    try:
        return json.loads(record_path(root, name).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_record(root: str | Path, name: str) -> RunEvaluation | None:
    """The evaluation record stored for run ``name``, whatever its key (None: none, unreadable, or of
    another version): what a run whose weights are gone still says of itself."""
    try:
        return RunEvaluation.from_json(json.loads(record_path(root, name).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored(root: str | Path, job: EvaluationJob, key: str) -> RunEvaluation | None:
    """The record stored for ``job`` if its key is ``key``; None otherwise (none, another key, a
    record of another version, a damaged file: all mean "evaluate it")."""
    try:
        record = RunEvaluation.from_json(json.loads(record_path(root, job.name).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.key == key else None


def store(root: str | Path, record: RunEvaluation) -> None:
    """Written whole or not at all (a unique temporary name, renamed into place)."""
    path = record_path(root, record.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_json()) + "\n")
    os.replace(tmp, path)


def evaluated(root: str | Path, job: EvaluationJob, say=print, context: "Context | None" = None) -> RunEvaluation:
    """The job's record: the stored one when its key still holds, else evaluated now and stored."""
    key = job.key()
    found = stored(root, job, key)
    if found is None:
        found = evaluate_run(job, key, say, context)
        store(root, found)
    return found


class Context:
    """What consecutive evaluations in one process share: the test images (loaded once) and the
    black-box source's adversarials (crafted once)."""

    def __init__(self):
        self.datasets: dict = {}  # (dataset, test_limit, cache_dir) -> (the dataset, its test images in [0, 1])
        self.crafted: dict = {}   # eval.suite's memo of the source's adversarials
        self.attackers: dict = {}  # the black-box source, loaded once

    def dataset(self, run, cfg: EvalConfig):
        """The run's dataset with the evaluation's test subset, loaded once."""
        import data
        key = (run.config["dataset"]["name"], cfg.test_limit, cfg.cache_dir)
        if key not in self.datasets:
            dataset = data.load_dataset(run.data_config(cfg.test_limit, cfg.cache_dir))
            self.datasets[key] = (dataset, dataset.test_images.astype(np.float32) / 255.0)
        return self.datasets[key][0]

    def images(self, run, cfg: EvalConfig) -> tuple:
        """(test images in [0, 1], labels, the dataset's name)."""
        dataset = self.dataset(run, cfg)
        x = self.datasets[(run.config["dataset"]["name"], cfg.test_limit, cfg.cache_dir)][1]
        return x, dataset.test_labels, dataset.name


def evaluate_run(job: EvaluationJob, key: str | None = None, say=print, context: Context | None = None
                 ) -> RunEvaluation:
    """Evaluates one run as ``job`` says: Table 2's attacks at the matched epoch (white-box, and
    black-box from the source), CW on its final weights for Figure 5 on the curves' subset, and CW
    at Figure 2's epochs. Cached attack outcomes are reused."""
    from eval.metrics import summarize
    from eval.runs import load_run
    from eval.suite import LoadedRun, outcome

    context = context or Context()
    cfg = job.evaluation
    run = load_run(job.run_dir)
    x_test, y_test, dataset_name = context.images(run, cfg)

    def loaded(trained, picks=None) -> LoadedRun:
        x, y = (x_test, y_test) if picks is None else (x_test[picks], y_test[picks])
        return LoadedRun(trained, x, y, dataset_name, cfg.test_limit)

    picks = subset(len(y_test), job.curve_test_limit)
    cw_cfg = dataclasses.replace(cfg, attacks=("cw",))
    table_row = None
    if job.table_match is not None:
        say(f"table: {job.name} at epoch {job.table_match.epoch} (recorded benign accuracy "
            f"{job.table_match.accuracy:.3f})")
        table_row = _table_row(loaded(load_run(job.run_dir, job.table_epoch)), cfg, loaded, context,
                               subset(len(y_test), job.autoattack_complete) if job.autoattack_complete else None)
    curve_cw = summarize(outcome("cw", loaded(run, picks), cw_cfg)) if job.curve else None
    figure2 = tuple({"epoch": e, "cw": summarize(outcome("cw", loaded(load_run(job.run_dir, e), picks), cw_cfg))}
                    for e in job.figure2_epochs)
    record = RunEvaluation(job.name, key or job.key(), table_row, curve_cw, figure2)
    return RunEvaluation.from_json(record.to_json())  # as a reader in another process sees it


def _table_row(evaluated_run, cfg: EvalConfig, loaded, context: Context, completion_picks) -> dict:
    from eval import autoattack_eval
    from eval.evaluate import evaluate_target
    from eval.runs import load_run
    attacker = None
    if cfg.source_run:
        if cfg.source_run not in context.attackers:
            source = load_run(cfg.source_run)
            if source.config["dataset"]["name"] != evaluated_run.run.config["dataset"]["name"]:
                raise RunDirError(f"--source_run {source.run_dir} was trained on {source.config['dataset']['name']}, "
                                  f"not {evaluated_run.run.config['dataset']['name']}: black-box attacks need one "
                                  f"test set")
            context.attackers[cfg.source_run] = loaded(source)
        attacker = context.attackers[cfg.source_run]
    result = evaluate_target(evaluated_run, cfg, attacker, context.crafted)
    if completion_picks is not None:
        aa = autoattack_eval.autoattack_outcome(evaluated_run, cfg)  # from the cache evaluate_target wrote
        result["autoattack"]["standard"] = autoattack_eval.standard_completion(evaluated_run, cfg, aa,
                                                                               completion_picks)
    if attacker is not None:
        result.update(source_record(attacker.run, attacker.fingerprint))
    return result


def source_record(source, weights: str) -> dict:
    """What a Table 2 row records of its black-box source: its name, the fingerprint of its weights,
    and when its training began (on a new machine a source is trained again under the same name)."""
    return {"black_box_source": source.run_dir.name, "black_box_source_weights": weights,
            "black_box_source_created": source.config.get("created")}


def subset(n: int, size: int) -> np.ndarray:
    """A fixed random subset of ``size`` of ``n`` test examples, sorted (all of them for 0 or >= n)."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:size])


def _fingerprint(run_dir: Path, epoch: int | None = None) -> str:
    from eval.runs import TrainedRun
    return TrainedRun(run_dir, {}, epoch).fingerprint()
