"""``run.py --mode report --root DIR``: the paper's comparison, from the runs of one or more sweeps.

    python run.py --mode report --root runs/study --match_benign lowest --test_limit 500

Finds every run under DIR (``--mode sweep`` puts them there), groups them by defense and by the
setting their sweep varied, and matches benign accuracy (``study.plan``: each table run's kept
epoch closest to the target); evaluates each run (``study.evaluations``: its Table 2 row at the
matched epoch, CW-L2 on its final weights for Figure 5, Figure 2's epochs for the first FGM-AT
run), reusing the evaluations a study's jobs stored; and writes ``DIR/report/report.md``
(protocol, Table 2 with mean ± std over seeds, the matching, the plots, and a paragraph per claim
of the paper saying whether these numbers support it) and ``report.json``.

Attack outcomes are cached per run (``eval.suite``): a second report computes only what is new.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

from eval import autoattack_eval
from eval.config import EvalConfig
from study import report_curves, report_markdown, report_prior, report_protocol, verdicts
from study.evaluations import (EXTRA_ATTACKS, TABLE_ATTACKS, Context, evaluated, jobs_for, read_record,
                               report_attacks, subset)
from study.matching import epoch_records
from study.plan import Plan, StudyRun, discover, make_plan, recorded_subsets
from study.plan import group, spaced, table_point  # noqa: F401 (callers read them here, as before plan.py)
from study.report_tables import evaluation_cost
from training.rundir import RunDirError, move_aside, write_json_atomic  # noqa: F401 (RunDirError: callers' catch)

REPORT_DIR = "report"
# What a report was asked for and made from; a report that differs in any of these is kept aside.
REPORT_INPUTS = ("sweeps", "test_images", "match_benign", "target", "tolerance", "attack_settings",
                 "curve_test_images", "source_run", "figure2_epochs", "autoattack_complete", "prior_reports")


def build_report(root: str, cfg: EvalConfig, match_benign: str = "lowest", tolerance: float = 0.01,
                 curve_test_limit: int = 0, say=print, figure2_epochs: int = 6, autoattack_complete: int = 0,
                 prior_reports=(), dataset_label: str = "", table_names: tuple[str, ...] = ()) -> dict:
    """``curve_test_limit``: CW-L2 for the curves on a fixed random subset of this many of the test
    images (0: all of them); the curves' benign accuracy is the one training recorded on all.
    ``figure2_epochs``: Figure 2's FGM-AT run over at most this many of its kept epochs.
    ``autoattack_complete``: on a fixed random subset of this many test images of every table run,
    the standard AutoAttack's remaining attacks after the custom one's (autoattack_eval.standard_completion).
    ``prior_reports``: earlier reports' report.json, whose numbers stand in for the runs under
    ``root`` that hold their training log but no weights (study.report_prior).
    ``dataset_label``: the dataset's name in the report (e.g. "CIFAR-100 (npz copy)"); empty: its --dataset value.
    ``table_names``: the runs that are Table 2's (``study.plan.make_plan``); empty: each group's value with the
    most seeds."""
    check_options(root, cfg, tolerance, curve_test_limit, autoattack_complete)
    started = time.monotonic()
    plan = make_plan(root, cfg.source_run, match_benign, tolerance, figure2_epochs, discover(Path(root)),
                     table_names)
    subsets = _check_subsets(plan, say)
    say(f"{len(plan.runs)} finished run(s) in {root}"
        + (f", {len(plan.unfinished)} unfinished (left out)" if plan.unfinished else "")
        + (f"; matching benign accuracy {plan.target:.3f}" if plan.target is not None else ""))
    cfg = dataclasses.replace(report_attacks(cfg), run_dirs=tuple(str(r.run.run_dir) for r in plan.runs))
    cfg.validate()
    context = Context()
    dataset = context.dataset(plan.runs[0].run, cfg)
    n = len(dataset.test_labels)
    attacks = TABLE_ATTACKS + ("masking",) + tuple(a for a in EXTRA_ATTACKS if a in cfg.attacks)
    protocol = report_protocol.protocol(cfg, dataset, plan.runs, plan.groups, plan.target_spec, plan.target,
                                        tolerance, attacks)
    if dataset_label:
        protocol["dataset_label"] = dataset_label
    protocol["curve_test_images"] = int(len(subset(n, curve_test_limit)))
    protocol["autoattack_complete"] = int(len(subset(n, autoattack_complete))) if autoattack_complete else 0
    priors = report_prior.load_priors(prior_reports, protocol)
    results = {}
    for job in jobs_for(plan, cfg, curve_test_limit, autoattack_complete):
        results[job.name] = evaluated(root, job, say, context)
    results.update(_records_without_weights(root, plan, say))
    report = assemble(plan, results, priors, protocol)
    report["protocol"]["recorded_benign_subsets"] = subsets
    return write_report(Path(root) / REPORT_DIR, report, started, say)


def check_options(root: str, cfg: EvalConfig, tolerance: float, curve_test_limit: int,
                  autoattack_complete: int) -> None:
    """The report's options, before any data loads or attack runs (one-line ValueErrors)."""
    if not root:
        raise ValueError("--mode report needs --root DIR, the directory of a sweep's runs")
    if tolerance < 0:
        raise ValueError(f"--match_tolerance must be >= 0, got {tolerance}")
    if curve_test_limit < 0:
        raise ValueError(f"--curve_test_limit must be >= 0, got {curve_test_limit}")
    if autoattack_complete < 0:
        raise ValueError(f"--autoattack_complete must be >= 0, got {autoattack_complete}")
    if autoattack_complete and "autoattack" not in cfg.attacks:
        raise ValueError("--autoattack_complete completes AutoAttack to its standard version: add autoattack to "
                         "--attacks")
    if autoattack_complete and not autoattack_eval.completion_attacks(cfg.autoattack_parts):  # before any attack
        raise ValueError("--autoattack_complete: the standard AutoAttack already runs every attack on every image; "
                         "give --autoattack_version custom --autoattack_attacks apgd-ce,apgd-t")


def _check_subsets(plan: Plan, say) -> dict:
    subsets = recorded_subsets(plan.runs)
    if len(subsets) > 1:
        shown = "; ".join(f"{what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                          for what, names in subsets.items())
        if plan.target is not None:
            raise RunDirError(f"benign-accuracy matching would compare accuracies that training recorded on different "
                              f"test subsets ({shown}): retrain with one --test_limit, put the runs under separate "
                              f"--root folders, or pass --match_benign none")
        say(f"WARNING: the runs' recorded benign accuracies (Figure 5's x axis) come from different test subsets "
            f"({shown}); they are not comparable")
    return subsets


def _records_without_weights(root: str, plan: Plan, say) -> dict:
    """{run: its stored evaluation record} for the runs whose weights are gone (a lost machine; their
    logs and records restored from the committed copies, ``study.runner.restore_logs``), where the
    record attacked the epoch this plan matches: they stand as evaluated."""
    found = {}
    for member in plan.runs:
        record = None if member.has_weights else read_record(root, member.run.name)
        if record is None:
            continue
        epoch = record.table_row.get("epoch") if record.table_row else None
        if member.run.name in plan.matches and epoch != plan.table_epoch(member):
            say(f"{member.run.name}: its stored evaluation attacked epoch {epoch}, this report matches epoch "
                f"{plan.table_epoch(member)}, and its weights are gone: left to an earlier report, if any")
            continue
        found[member.run.name] = record
    return found


def assemble(plan: Plan, results: dict, priors: list, protocol: dict) -> dict:
    """The report's numbers from the plan and each run's evaluation record (``results``: run name
    -> RunEvaluation), an earlier report's standing in for runs without weights."""
    table = {}
    for key, members in plan.table_runs.items():
        rows = []
        for member in members:
            match = plan.matches[member.run.name].record()
            if member.run.name in results:
                rows.append({"run": member.run.name, "seed": member.seed, "match": match,
                             **results[member.run.name].table_row})
            else:
                rows.append({**report_prior.table_row(priors, member.run.run_dir, plan.table_epoch(member)),
                             "match": match})
        table[key] = {"label": members[0].label, "value": members[0].value, "rows": rows}
    points = [_curve_point(member, results, priors) for member in plan.curve_runs()]
    over_epochs = _figure2(plan, results, priors)
    protocol["figure2_epochs"] = [p["epoch"] for p in over_epochs]
    if priors:  # only where used: a report made without them rebuilds as it was
        protocol["prior_reports"] = [p.record() for p in priors]
    if plan.early:
        protocol["finished_early"] = plan.early
        longest = max(r.run.settings["train.epochs"] for r in plan.runs if r.finished_early)
        if longest != protocol["epochs"]:  # a study's matching.max_epochs
            protocol["finished_early_max_epochs"] = longest
    attack_over_epochs = {key: _attack_over_epochs(min(members, key=lambda r: r.seed))
                          for key, members in plan.table_runs.items()}
    return {"protocol": protocol, "table": table, "curve_points": points,
            "fgm_over_epochs": {"run": plan.figure2.run.name if plan.figure2 else None, "points": over_epochs},
            "training_attack_over_epochs": {k: v for k, v in attack_over_epochs.items() if v["epochs"]},
            "costs": {key: _cost(members) for key, members in plan.groups.items()},
            "unfinished": [str(p) for p in plan.unfinished]}


def _curve_point(member: StudyRun, results: dict, priors: list) -> dict:
    cw = results[member.run.name].curve_cw if member.run.name in results else \
        report_prior.curve_point(priors, member.run.run_dir)["cw"]
    return {"defense": member.defense, "group": member.group, "swept": member.swept, "value": member.value,
            "seed": member.seed, "run": member.run.name, "benign_accuracy": member.final_accuracy, "cw": cw,
            "training_attack": _training_attack(member.run.run_dir)}


def _figure2(plan: Plan, results: dict, priors: list) -> list[dict]:
    first = plan.figure2
    if first is None:
        return []
    if first.run.name not in results:
        return report_prior.over_epochs(priors, first.run.run_dir, plan.figure2_epochs)
    return [{"epoch": p["epoch"], "benign_accuracy": first.accuracies[p["epoch"]], "cw": p["cw"]}
            for p in results[first.run.name].figure2]


def write_report(out_dir: Path, report: dict, started: float, say) -> dict:
    """report.json, report.md and the plots, an earlier report made from other inputs moved aside."""
    moved_to = _set_aside_if_different(out_dir, report["protocol"])
    if moved_to:
        say(f"the previous report was made from other runs or settings: moved it to {moved_to}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report["evaluation_cost"] = evaluation_cost(report)
    report["plots"] = report_curves.draw(report, out_dir)
    report["claims"] = verdicts.assess(report)
    report["protocol"]["report_seconds"] = round(time.monotonic() - started, 1)
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(report_markdown.markdown(report))
    say(f"wrote {out_dir / 'report.md'}, report.json and {len(report['plots'])} plot(s)")
    return report


def _training_attack(run_dir: Path) -> dict | None:
    """How strong the attack the classifier trained against was at the end: its mean L2 and the
    final EMA classifier's accuracy under it on the monitor images (training's last epoch record);
    None for clean training."""
    last = epoch_records(run_dir)
    last = last[max(last)] if last else {}
    if not last.get("monitor_delta_l2_mean"):
        return None
    return {"delta_l2": float(last["monitor_delta_l2_mean"]), "accuracy": float(last["monitor_adv_acc"])}


# Per-epoch diagnostics of the attack a classifier trains against, from training's log: its mean L2
# and the classifier's accuracy under it (every attacking defense); for a learned attacker fed a
# gradient (PGN), how far x_adv moves when that input is zeroed and the input's RMS.
ATTACK_DIAGNOSTICS = ("monitor_delta_l2_mean", "monitor_adv_acc", "monitor_zeroed_grad_shift_l2",
                      "monitor_grad_input_rms")


def _attack_over_epochs(member: StudyRun) -> dict:
    """The training attack's diagnostics of one run (a group's table point, lowest seed) per epoch;
    no epochs for clean training."""
    records = epoch_records(member.run.run_dir)
    epochs = [{"epoch": e, **{k: r[k] for k in ATTACK_DIAGNOSTICS if r.get(k) is not None}}
              for e, r in sorted(records.items())]
    if not any(p.get("monitor_delta_l2_mean") for p in epochs):
        epochs = []
    return {"run": member.run.name, "epochs": epochs}


def _cost(members: list[StudyRun]) -> dict:
    """A group's training cost: median s/epoch over its runs (each the median of its own epochs'
    training steps, as Table 2's column) and its runs' total training hours."""
    medians = [m.run.seconds_per_epoch() for m in members]
    medians = [m for m in medians if m is not None]
    seconds = sum(r["seconds_per_epoch"] for m in members for r in epoch_records(m.run.run_dir).values())
    return {"runs": len(members), "seconds_per_epoch": statistics.median(medians) if medians else None,
            "training_hours": round(seconds / 3600, 3)}


def _set_aside_if_different(out_dir: Path, protocol: dict) -> Path | None:
    """Moves an earlier report aside unless it was made from the same runs and settings, in which
    case rewriting it reproduces it from the cached attacks."""
    try:
        previous = json.loads((out_dir / "report.json").read_text())["protocol"]
    except (OSError, ValueError, KeyError):
        return move_aside(out_dir) if out_dir.exists() and any(out_dir.iterdir()) else None
    same = json.loads(json.dumps({k: protocol.get(k) for k in REPORT_INPUTS})) == \
        {k: previous.get(k) for k in REPORT_INPUTS}
    return None if same else move_aside(out_dir)
