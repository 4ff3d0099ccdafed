"""``run.py --mode report --root DIR``: the paper's comparison, from the runs of one or more sweeps.

    python run.py --mode report --root runs/study --match_benign lowest --test_limit 500

Finds every run under DIR (``--mode sweep`` puts them there), groups them by defense and by the
setting their sweep varied, and:

1. matches benign accuracy: for each run at a defense's *table point* (its value with the most
   seeds), picks the kept epoch whose recorded benign accuracy is closest to the target
   (``study.matching``), and evaluates those checkpoints with every attack (Table 2);
2. evaluates CW-L2 on each run's final weights and draws benign accuracy against rho_cw, one
   line per defense across its sweep, error bars over seeds (Figure 5), and the Figure 2 pair
   for FGM-AT (its sweep; one run over epochs);
3. writes ``DIR/report/report.md`` (protocol, Table 2 with mean ± std over seeds, the matching,
   the plots, and a paragraph per claim of the paper saying whether these numbers support it)
   and ``report.json``.

Attack outcomes are cached per run (``eval.suite``): a second report computes only what is new.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

import data
from eval import autoattack_eval
from eval.config import DEFAULT_ATTACKS, EvalConfig
from eval.evaluate import evaluate_target
from eval.metrics import summarize
from eval.runs import TrainedRun, load_run
from eval.suite import LoadedRun, outcome
from study import report_claims, report_curves, report_prior, report_protocol
from study.matching import Match, closest_epoch, epoch_accuracies, epoch_records, kept_epochs, parse_target
from study.report_tables import DEFENSE_TITLES, evaluation_cost, group_title
from training.rundir import (CONFIG_FILE, RunDirError, default_settings, finished_event, move_aside, read_config,
                             write_json_atomic)

REPORT_DIR = "report"
# What a report was asked for and made from; a report that differs in any of these is kept aside.
REPORT_INPUTS = ("sweeps", "test_images", "match_benign", "target", "tolerance", "attack_settings",
                 "curve_test_images", "source_run", "figure2_epochs", "autoattack_complete", "prior_reports")
TABLE_ATTACKS = DEFAULT_ATTACKS  # the paper's Table 2 columns
# What else a report runs on the table runs when --attacks names it: the field's standard evaluation.
EXTRA_ATTACKS = ("autoattack",)
# Settings that differ between runs of one sweep without being what it swept.
_NOT_SWEPT = ("train.seed", "train.epochs")


@dataclasses.dataclass
class StudyRun:
    run: TrainedRun
    swept: str | None          # the setting the defense's sweep varied ("defense.eps", ...)
    accuracies: dict           # epoch -> benign accuracy recorded in training
    kept: list
    group: str = ""            # the defense and its variant: "pgn", "pgn[pgn_grad_scale=unit]" (group())
    finished_early: bool = False  # --stop_at_benign: Table 2 only, no curve point
    has_weights: bool = True   # False: its training log alone; an earlier report's numbers stand in (report_prior)

    @property
    def defense(self) -> str:
        return self.run.defense

    @property
    def seed(self) -> int:
        return int(self.run.settings["train.seed"])

    @property
    def value(self):
        return self.run.settings[self.swept] if self.swept else None

    @property
    def label(self) -> str:
        title = group_title(self.group or self.defense)
        return title if self.swept is None else f"{title} {self.swept.split('.')[-1]}={self.value:g}"


def build_report(root: str, cfg: EvalConfig, match_benign: str = "lowest", tolerance: float = 0.01,
                 curve_test_limit: int = 0, say=print, figure2_epochs: int = 6, autoattack_complete: int = 0,
                 prior_reports=(), only: str | None = None) -> dict:
    """``curve_test_limit``: CW-L2 for the curves on a fixed random subset of this many of the test
    images (0: all of them); the curves' benign accuracy is the one training recorded on all.
    ``figure2_epochs``: Figure 2's FGM-AT run over at most this many of its kept epochs.
    ``autoattack_complete``: on a fixed random subset of this many test images of every table run,
    the standard AutoAttack's remaining attacks after the custom one's (autoattack_eval.standard_completion).
    ``prior_reports``: earlier reports' report.json, whose numbers stand in for the runs under
    ``root`` that hold their training log but no weights (study.report_prior).
    ``only``: evaluate the run of that name alone (its Table 2 row, curve point and Figure 2
    epochs, into its cache) and write no report: one of a study's evaluation jobs
    (``evaluation_keys`` says which runs have one)."""
    if not root:
        raise ValueError("--mode report needs --root DIR, the directory of a sweep's runs")
    target_spec = parse_target(match_benign)
    if tolerance < 0:
        raise ValueError(f"--match_tolerance must be >= 0, got {tolerance}")
    if autoattack_complete < 0:
        raise ValueError(f"--autoattack_complete must be >= 0, got {autoattack_complete}")
    if autoattack_complete and "autoattack" not in cfg.attacks:
        raise ValueError("--autoattack_complete completes AutoAttack to its standard version: add autoattack to "
                         "--attacks")
    if autoattack_complete and not autoattack_eval.completion_attacks(cfg.autoattack_parts):  # before any attack
        raise ValueError("--autoattack_complete: the standard AutoAttack already runs every attack on every image; "
                         "give --autoattack_version custom --autoattack_attacks apgd-ce,apgd-t")
    started = time.monotonic()
    runs, unfinished, source, groups, table_runs, early, target = plan(root, cfg, match_benign)
    subsets = recorded_subsets(runs)
    if len(subsets) > 1:
        shown = "; ".join(f"{what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                          for what, names in subsets.items())
        if target is not None:
            raise RunDirError(f"benign-accuracy matching would compare accuracies that training recorded on different "
                              f"test subsets ({shown}): retrain with one --test_limit, put the runs under separate "
                              f"--root folders, or pass --match_benign none")
        say(f"WARNING: the runs' recorded benign accuracies (Figure 5's x axis) come from different test subsets "
            f"({shown}); they are not comparable")
    say(f"{len(runs)} finished run(s) in {root}" + (f", {len(unfinished)} unfinished (left out)" if unfinished else "")
        + (f"; matching benign accuracy {target:.3f}" if target is not None else ""))

    requested = cfg.attacks
    cfg = dataclasses.replace(cfg, run_dirs=tuple(str(r.run.run_dir) for r in runs),
                              attacks=tuple(a for a in cfg.attacks if a in TABLE_ATTACKS) or TABLE_ATTACKS)
    cfg = dataclasses.replace(cfg, attacks=cfg.attacks + tuple(a for a in EXTRA_ATTACKS if a in requested))
    cfg.validate()
    dataset = data.load_dataset(runs[0].run.data_config(cfg.test_limit, cfg.cache_dir))
    x_test, y_test = dataset.test_images.astype(np.float32) / 255.0, dataset.test_labels

    def loaded(run: TrainedRun) -> LoadedRun:
        return LoadedRun(run, x_test, y_test, dataset.name, cfg.test_limit)

    attacker = loaded(source) if source is not None else None
    if source is not None and source.config["dataset"]["name"] != runs[0].run.config["dataset"]["name"]:
        raise RunDirError(f"--source_run {source.run_dir} was trained on {source.config['dataset']['name']}, not "
                          f"{runs[0].run.config['dataset']['name']}: black-box attacks need one test set")
    crafted: dict = {}  # the black-box source's adversarials, crafted once for every table run
    completion_picks = subset(len(y_test), autoattack_complete) if autoattack_complete else None
    if curve_test_limit < 0:
        raise ValueError(f"--curve_test_limit must be >= 0, got {curve_test_limit}")
    picks = subset(len(y_test), curve_test_limit)
    attacks = TABLE_ATTACKS + ("masking",) + tuple(a for a in EXTRA_ATTACKS if a in cfg.attacks)
    protocol = report_protocol.protocol(cfg, dataset, runs, groups, target_spec, target, tolerance, attacks)
    protocol["curve_test_images"] = int(len(picks))
    protocol["autoattack_complete"] = 0 if completion_picks is None else int(len(completion_picks))
    priors = report_prior.load_priors(prior_reports, protocol)

    # 1. Table 2 at matched benign accuracy.
    table = {}
    for defense, members in table_runs.items():
        rows = []
        for member in members:
            # Without kept epochs (--keep_checkpoints last) only the final weights can be matched.
            match = closest_epoch(member.accuracies, member.kept or [max(member.accuracies)], target, tolerance)
            epoch = match.epoch if member.kept else None
            say(f"table: {member.run.name} at epoch {match.epoch} (recorded benign accuracy {match.accuracy:.3f})")
            if only is not None and member.run.name != only:
                continue
            if not member.has_weights:
                rows.append({**report_prior.table_row(priors, member.run.run_dir, epoch), "match": _match_dict(match)})
                continue
            evaluated = loaded(load_run(member.run.run_dir, epoch))
            result = evaluate_target(evaluated, cfg, attacker, crafted)
            if completion_picks is not None:
                aa = autoattack_eval.autoattack_outcome(evaluated, cfg)  # from the cache evaluate_target wrote
                result["autoattack"]["standard"] = autoattack_eval.standard_completion(
                    evaluated, cfg, aa, completion_picks)
            rows.append({"run": member.run.name, "seed": member.seed, "match": _match_dict(match), **result,
                         **(report_prior.source_record(source, attacker.fingerprint) if source is not None else {})})
        table[defense] = {"label": members[0].label, "value": members[0].value, "rows": rows}

    # 2. Curves: CW on every run's final weights; FGM-AT's epochs for Figure 2.
    cw_cfg = dataclasses.replace(cfg, attacks=("cw",))

    def curve_cw(run: TrainedRun) -> dict:
        return summarize(outcome("cw", LoadedRun(run, x_test[picks], y_test[picks], dataset.name, cfg.test_limit),
                                 cw_cfg))

    points = []
    for member in (m for members in groups.values() for m in members if not m.finished_early):
        if only is not None and member.run.name != only:
            continue
        cw = curve_cw(member.run) if member.has_weights else report_prior.curve_point(priors, member.run.run_dir)["cw"]
        points.append({"defense": member.defense, "group": member.group, "swept": member.swept, "value": member.value,
                       "seed": member.seed, "run": member.run.name,
                       "benign_accuracy": member.accuracies[max(member.accuracies)], "cw": cw,
                       "training_attack": _training_attack(member.run.run_dir)})
    over_epochs = []
    fgm_runs = [r for r in table_runs.get("fgm", []) if not r.finished_early]
    if fgm_runs:
        first = min(fgm_runs, key=lambda r: r.seed)
        epochs = spaced(first.kept, figure2_epochs)
        if not first.has_weights:
            over_epochs = report_prior.over_epochs(priors, first.run.run_dir, epochs)
        for epoch in epochs if first.has_weights and only in (None, first.run.name) else ():
            over_epochs.append({"epoch": epoch, "benign_accuracy": first.accuracies[epoch],
                                "cw": curve_cw(load_run(first.run.run_dir, epoch))})

    if only is not None:
        return {}
    attack_over_epochs = {key: _attack_over_epochs(min(members, key=lambda r: r.seed))
                          for key, members in table_runs.items()}
    costs = {key: _cost(members) for key, members in groups.items()}

    out_dir = Path(root) / REPORT_DIR
    protocol["figure2_epochs"] = [p["epoch"] for p in over_epochs]
    if priors:  # only where used: a report made without them rebuilds as it was
        protocol["prior_reports"] = [p.record() for p in priors]
    if early:
        protocol["finished_early"] = early
    protocol["recorded_benign_subsets"] = subsets
    moved_to = _set_aside_if_different(out_dir, protocol)
    if moved_to:
        say(f"the previous report was made from other runs or settings: moved it to {moved_to}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"protocol": protocol, "table": table, "curve_points": points,
              "fgm_over_epochs": {"run": first.run.name if fgm_runs else None, "points": over_epochs},
              "training_attack_over_epochs": {k: v for k, v in attack_over_epochs.items() if v["epochs"]},
              "costs": costs,
              "unfinished": [str(p) for p in unfinished]}
    report["evaluation_cost"] = evaluation_cost(report)
    report["plots"] = report_curves.draw(report, out_dir)
    report["claims"] = report_claims.assess(report)
    report["protocol"]["report_seconds"] = round(time.monotonic() - started, 1)
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(report_claims.markdown(report))
    say(f"wrote {out_dir / 'report.md'}, report.json and {len(report['plots'])} plot(s)")
    return report


def plan(root: str, cfg: EvalConfig, match_benign: str) -> tuple:
    """What a report compares: (finished runs but the source, unfinished run folders, the source
    run or None, groups, each group's table runs, runs finished early, the benign accuracy to match)."""
    target_spec = parse_target(match_benign)
    runs, unfinished = discover(Path(root))
    source = load_run(cfg.source_run) if cfg.source_run else None
    if source is not None:  # the black-box source is an independent run, not one of the table's
        runs = [r for r in runs if r.run.run_dir.resolve() != source.run_dir.resolve()]
        if not runs:
            raise RunDirError(f"--root {root} holds no finished run besides --source_run {cfg.source_run}")
    groups = group(runs)
    table_runs = {d: table_point(rs) for d, rs in groups.items()}
    early = [r.run.name for r in runs if r.finished_early]
    if early and not isinstance(target_spec, float):
        raise RunDirError(f"--match_benign {match_benign} compares final accuracies, but {', '.join(early[:3])} "
                          f"finished early (--stop_at_benign): give the benign accuracy to match as a number")
    return runs, unfinished, source, groups, table_runs, early, resolve_target(target_spec, table_runs)


def subset(n: int, size: int) -> np.ndarray:
    """A fixed random subset of ``size`` of ``n`` test examples, sorted (all of them for 0 or >= n)."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:size])


def spaced(epochs: list[int], most: int) -> list[int]:
    """At most ``most`` of ``epochs`` (sorted), evenly spaced, the first and the last included."""
    if len(epochs) <= most:
        return list(epochs)
    if most == 1:
        return [epochs[-1]]
    return sorted({epochs[round(i * (len(epochs) - 1) / (most - 1))] for i in range(most)})


def discover(root: Path) -> tuple[list[StudyRun], list[Path]]:
    """The finished runs directly under ``root`` (sorted by name) and the unfinished ones."""
    if not root.is_dir():
        raise RunDirError(f"--root {root} is not a directory: give the --root of a --mode sweep")
    finished, unfinished = [], []
    for run_dir in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).exists()):
        config = read_config(run_dir / CONFIG_FILE, "move it out of --root, or train it again with --overwrite")
        event = finished_event(run_dir, config["settings"]["train.epochs"])
        if event is None:
            unfinished.append(run_dir)
            continue
        weights = report_prior.has_weights(run_dir)
        run = load_run(run_dir) if weights else TrainedRun(run_dir, config)
        accuracies = epoch_accuracies(run_dir)
        kept = kept_epochs(run_dir) if weights else report_prior.kept_epochs_when_trained(config, accuracies, event)
        finished.append(StudyRun(run, None, accuracies, kept, finished_early=bool(event.get("early")),
                                 has_weights=weights))
    if not finished:
        raise RunDirError(f"--root {root} holds no finished run: train with --mode sweep --root {root} first")
    datasets = {r.run.config["dataset"]["name"] for r in finished}
    if len(datasets) > 1:
        raise RunDirError(f"--root {root} mixes datasets ({', '.join(sorted(datasets))}): one report per dataset")
    return finished, unfinished


def recorded_subsets(runs: list[StudyRun]) -> dict[str, list[str]]:
    """{the test subset on which training recorded benign accuracy, in words: the runs on it}.

    Matching and Figure 5 use those recorded accuracies, not the report's own test images; runs
    recorded on different subsets (another --test_limit at training) are not comparable."""
    subsets: dict[str, list[str]] = {}
    for member in runs:
        limit = int(member.run.settings.get("data.test_limit") or 0)
        size = member.run.config["dataset"].get("test_size")
        what = f"{size} test images (training's --test_limit {limit})" if limit else \
            f"the whole test split ({size} images)"
        subsets.setdefault(what, []).append(member.run.name)
    return subsets


def group(runs: list[StudyRun]) -> dict[str, list[StudyRun]]:
    """Runs by defense and variant (clean first), each marked with the setting its sweep varied.

    Within a defense, a setting that takes text or boolean values and differs between its runs is
    a *variant* (another algorithm: ``--pgn_grad_scale unit``, ``--l2l_attacker slim``): its runs
    are a group, and a curve, of their own, keyed ``pgn[pgn_grad_scale=unit]`` by the values away
    from the defaults (the defaults' group keeps the plain ``pgn``). A number that differs is what
    the group's sweep varied, its curve's axis: at most one per group."""
    order = list(DEFENSE_TITLES)
    by_defense: dict[str, list[StudyRun]] = {}
    for member in sorted(runs, key=lambda r: (order.index(r.defense) if r.defense in order else 99, r.run.name)):
        by_defense.setdefault(member.defense, []).append(member)
    groups: dict[str, list[StudyRun]] = {}
    for defense, members in by_defense.items():
        differing = _differing(members)
        categorical = [k for k in differing if all(isinstance(m.run.settings.get(k), (str, bool, type(None)))
                                                  for m in members)]
        defaults = default_settings(defense)
        for member in members:
            away = {k: member.run.settings.get(k) for k in categorical if member.run.settings.get(k) != defaults.get(k)}
            shown = ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(away.items()))
            key = f"{defense}[{shown}]" if away else defense
            groups.setdefault(key, []).append(member)
    for key, members in groups.items():
        keys = _differing(members)
        if len(keys) > 1:
            raise RunDirError(f"the {key} runs differ in more than one setting ({', '.join(keys)}): "
                              f"a report compares one sweep per defense and variant; put other sweeps under another "
                              f"--root")
        for member in members:
            member.group = key
            member.swept = keys[0] if keys else None
    return groups


def _differing(members: list[StudyRun]) -> list[str]:
    """The settings in which the runs differ, but for the seed and the epoch count."""
    return sorted({k for m in members for k in m.run.settings if k not in _NOT_SWEPT
                   and len({json.dumps(x.run.settings.get(k)) for x in members}) > 1})


def table_point(members: list[StudyRun]) -> list[StudyRun]:
    """The runs at the defense's value with the most seeds (ties: the middle value of the sweep)."""
    by_value: dict = {}
    for member in members:
        by_value.setdefault(json.dumps(member.value), []).append(member)
    values = sorted(by_value, key=lambda v: json.loads(v) if json.loads(v) is not None else 0)
    most = max(len(v) for v in by_value.values())
    tied = [v for v in values if len(by_value[v]) == most]
    return by_value[tied[len(tied) // 2]]


def resolve_target(spec, table_runs: dict[str, list[StudyRun]]) -> float | None:
    """The benign accuracy to match: a number as given; ``clean``: the mean final accuracy of the
    clean runs; ``lowest``: the lowest final accuracy among the table runs (every run reaches it at
    its end, so matching picks the epoch where it did)."""
    if spec is None or isinstance(spec, float):
        return spec
    finals = {d: [m.accuracies[max(m.accuracies)] for m in members] for d, members in table_runs.items()}
    if spec == "clean":
        if "none" not in finals:
            raise RunDirError("--match_benign clean needs clean runs (--defense none) under --root")
        return statistics.mean(finals["none"])
    return min(min(v) for v in finals.values())


def _match_dict(match: Match) -> dict:
    return {"epoch": match.epoch, "recorded_accuracy": match.accuracy, "target": match.target,
            "difference": match.difference, "within_tolerance": match.within_tolerance}


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
