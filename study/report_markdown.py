"""report.md: the protocol, Table 2 at matched benign accuracy, the matching, the curves, and the
paper's claims with the verdicts ``study.verdicts`` reached, from a report's numbers (report.json
rebuilds the same text)."""
from __future__ import annotations

import math
from pathlib import Path

from training import rundir

from study import report_prior, report_protocol
from study.report_tables import (COST_COLUMNS, TABLE_COLUMNS, aggregate_table, base_defense, curve_by_defense,
                                 evaluation_cost, group_title, ordered_report, paired)
from study.published import PAPER_TABLE3, rounded
from study.verdicts import BASELINES, paper_table

# The paper's table beside ours: the columns both have, headed as ours are.
PAPER_COLUMNS = tuple((key, heading) for key, heading, _ in TABLE_COLUMNS if key in PAPER_TABLE3["none"])


def markdown(report: dict) -> str:
    report = ordered_report(report)
    p = report["protocol"]
    cost = evaluation_cost(report)
    subsets = list(p.get("recorded_benign_subsets") or {})
    recorded = subsets[0] if len(subsets) == 1 else "different test subsets per run" if subsets else \
        "training's own test subset"
    mixed = ["**WARNING: the runs' recorded benign accuracies come from different test subsets ("
             + "; ".join(f"{k}: {', '.join(v)}" for k, v in p["recorded_benign_subsets"].items())
             + "), so Figure 5's benign-accuracy axis compares numbers measured on different images.**", ""] \
        if len(subsets) > 1 else []
    lines = _protocol_lines(report, cost, recorded) + ["", *mixed] + _table2_section(report) \
        + _matching_lines(report, recorded) + _masking_lines(report) + _curve_lines(report, recorded, mixed)
    lines += (_standard_autoattack_markdown(report) + _paired_markdown(report) + _training_attack_markdown(report)
              + _cost_markdown(report) + _evaluation_cost_markdown(cost))
    lines += ["", "## The paper's claims against these numbers", "",
              "Rule: a difference is *supported* when it has the paper's sign and exceeds two standard errors "
              "over seeds, *contradicted* when it exceeds them the other way, *inconclusive* otherwise. With one "
              "seed on either side there is no standard error: the verdict goes by the sign alone and says "
              "*(one seed)*. Figure 5's claim compares the curves' means at 11 benign accuracies, without error "
              "bars.", ""]
    for c in report["claims"]:
        lines += [f"**{c['claim']}** — *{c['verdict']}*. Paper: {c['paper']} Here: {c['ours']}.", ""]
    if report.get("unfinished"):
        lines += ["Unfinished runs left out: " + ", ".join(f"`{Path(u).name}`" for u in report["unfinished"]), ""]
    return "\n".join(lines)


def _protocol_lines(report: dict, cost: dict, recorded: str) -> list[str]:
    p = report["protocol"]
    sweeps = "; ".join(
        f"{_title(d)}: " + (f"{s['setting'].split('.')[-1]} = {', '.join(f'{v:g}' for v in s['values'])}"
                            if s["setting"] else "no sweep") + f", seeds {', '.join(map(str, s['seeds']))}"
        for d, s in p["sweeps"].items())
    target = "final weights, no matching" if p["target"] is None else f"{p['target']:.3f}" + (
        f" ({p['match_benign']})" if isinstance(p["match_benign"], str) else "") + f", tolerance {p['tolerance']:.3f}"
    a = p["attack_settings"]
    label = f"{p['dataset_label']}: " if p.get("dataset_label") else ""
    return [
        f"# Reproduction report: {p.get('dataset_label') or p['dataset']}",
        "",
        "## Protocol",
        "",
        f"- Data: {label}{p['dataset']} ({p['dataset_source']}); {p['train_images']} training images, augmentation "
        f"{p['augment']}; {p['test_images']} class-balanced test images for every attack and for Table 2's "
        f"benign accuracy; the recorded benign accuracies of the matching and of Figures 5 and 2 are training's "
        f"own, on {recorded}.",
        f"- Classifier: Table 1's, width x{p['width']:g}; {p['epochs']} epochs, batch {p['batch_size']}, "
        f"Adam lr {p['lr']:g}, EMA weights evaluated.",
        f"- Sweeps: {sweeps}.",
        f"- Benign-accuracy matching: target {target}; each run's kept epoch closest to it.",
        f"- Attacks (white-box, on the EMA classifier in float32): FGM L2 eps {a['fgm']['fgm_eps']:g}; MIM L2 eps "
        f"{a['mim']['mim_eps']:g}, {a['mim']['mim_iters']} iterations; DeepFool {a['deepfool']['deepfool_iters']} "
        f"iterations, overshoot {a['deepfool']['deepfool_overshoot']:g}; CW-L2 {a['cw']['cw_iters']} iterations x "
        f"{a['cw']['cw_binary_steps']} binary steps, lr {a['cw']['cw_lr']:g}, initial c {a['cw']['cw_initial_const']:g}.",
        *([_autoattack_line(a["autoattack"])] if "autoattack" in a else []),
        *([f"- Standard AutoAttack on a subset: the standard version's remaining attacks "
           f"({', '.join(_completion_attacks(report))}) on a fixed random subset of {p['autoattack_complete']} of "
           f"the {p['test_images']} test images, on the examples the attacks above left robust (the standard "
           f"protocol, each attack on what the ones before it left): column *standard AutoAttack acc (subset)*."]
          if p.get("autoattack_complete") else []),
        *_provenance_lines(report),
        f"- Hardware and precision of the runs (each run's config.json): {report_protocol.hardware_text(p)}; training took "
        f"{p['training_hours']:.2f} h in all, {_evaluation_hours(cost)}; this report "
        f"{p.get('report_seconds', 0) / 60:.1f} min, reusing the attacks cached before it.",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in sorted(p["versions"].items(), key=_package_rank) if v)
        + f"; runs trained at commit {', '.join(p['training_commits'])}, this report made at commit "
        + f"{str(p['report_git'].get('commit'))[:10]}" + (" (with uncommitted changes)" if p["report_git"].get("dirty") else "")
        + ".",
        *([f"- Rebuilt by `python run.py --mode report --spec {p['study']} --root DIR`: at the study's --root from "
           f"its cached attacks; at a new DIR (a fresh checkout) from the training logs and evaluation records the "
           f"spec's `[report] training_logs` holds."] if p.get("study") else []),
    ]


def _table2_section(report: dict) -> list[str]:
    agg = aggregate_table(report["table"])
    # The columns some run has (AutoAttack and black-box ones only where the report ran them).
    columns = [c for c in TABLE_COLUMNS if any(not math.isnan(row[c[0]][0]) for row in agg.values())]
    lines = [
        "## Table 2 at matched benign accuracy",
        "",
        "Mean ± std over seeds (*k of n*: over the k seeds evaluated so; one value alone: one seed). L2 means and medians are over every example the attack left misclassified "
        "(the paper's rho, eq. 6), except the *(correct)* columns, over examples classified correctly before "
        "the attack. s/epoch is an epoch's training steps at the run's median step rate (over training's "
        "logging windows), without the per-epoch evaluation and the compiling step.",
        "",
        *table2_lines(agg, columns),
    ]
    paper = paper_table(report)
    scale = "full model, 200 epochs, all training images" + (" (the paper's main table)" if paper.table == "Table 2" else "")
    lines += ["", f"The paper's {paper.name} (FGM-AT and PGD-AT at eps {paper.eps:g}, PGN at c_L 50; {scale}), "
              "for the shape of the result:", "",
              "| defense | " + " | ".join(heading for _, heading in PAPER_COLUMNS) + " |",
              "|---" * (len(PAPER_COLUMNS) + 1) + "|"]
    for defense, row in paper.rows.items():
        lines.append(f"| {_title(defense)} | " + " | ".join(rounded(row[k], 2 if k == "seconds_per_epoch" else 4) for k, _ in PAPER_COLUMNS) + " |")
    return lines


def _matching_lines(report: dict, recorded: str) -> list[str]:
    p = report["protocol"]
    lines = ["", "## Matching", "", f"Recorded benign accuracy: training's, on {recorded} (Table 2's benign acc "
             f"is the report's, on its {p['test_images']} test images).", "",
             "| run | epoch | recorded benign acc | target | difference | within tolerance |",
             "|---|---|---|---|---|---|"]
    for entry in report["table"].values():
        for r in entry["rows"]:
            m = r["match"]
            lines.append(f"| {r['run']} | {m['epoch']} | {m['recorded_accuracy']:.3f} | "
                         f"{'-' if m['target'] is None else format(m['target'], '.3f')} | {m['difference']:+.3f} | "
                         f"{'yes' if m['within_tolerance'] else '**no**'} |")
    return lines


def _masking_lines(report: dict) -> list[str]:
    failures = [(r["run"], c) for e in report["table"].values() for r in e["rows"] for c in r["masking_checks"]
                if not c["passed"]]
    lines = ["", "## Gradient-masking checks", ""]
    notes = {r["run"]: r.get("masking_note") for e in report["table"].values() for r in e["rows"]}
    return lines + ([f"- **FAILED** `{run}`: {c['check']} ({c['detail']})" + (f"; {notes[run]}" if notes.get(run) else "")
                     for run, c in failures] or [
        f"All checks passed for the {sum(len(e['rows']) for e in report['table'].values())} table runs "
        "(large-budget PGD reaches ~0 accuracy, MIM at least as strong as FGM, minimum-norm attacks succeed, "
        "non-zero input gradients)."])


def _curve_lines(report: dict, recorded: str, mixed: list[str]) -> list[str]:
    p = report["protocol"]
    lines = ["", "## Robustness curves", ""] + [f"![{Path(x).stem}]({Path(x).name})" for x in report["plots"]]
    lines += ["", *mixed, f"Figure 5 points: final weights; benign accuracy as training recorded it on {recorded} "
              f"(not the report's {p['test_images']} test images), rho_cw on {p['curve_test_images']} of the "
              f"report's {p['test_images']} (a fixed random subset); mean ± std over seeds where there are several. *Training attack*: the mean L2 of "
              f"the perturbations the classifier trained against at the end, and the final classifier's "
              f"accuracy under them on the {p.get('monitor_images', 'monitor')} monitor images (training's "
              f"log, mean over seeds).", "",
              "| defense | value | n | benign acc | rho_cw (all) | rho_cw (correct) | training attack L2 | acc under it |",
              "|---|---|---|---|---|---|---|---|"]
    correct = curve_by_defense(report["curve_points"], "correct")
    for defense, points in curve_by_defense(report["curve_points"], "all").items():
        by_value = {_key(q["value"]): q for q in correct[defense]}
        for q in points:
            c = by_value[_key(q["value"])]
            lines.append(f"| {_title(defense)} | {'-' if q['value'] is None else format(q['value'], 'g')} | {q['n']} | "
                         f"{_cell((q['benign_mean'], q['benign_std']), q['n'], q['n'], 3)} | "
                         f"{_cell((q['rho_mean'], q['rho_std']), q['n'], q['n'], 3)} | "
                         f"{_cell((c['rho_mean'], c['rho_std']), c['n'], c['n'], 3)} | {_num(q.get('attack_l2_mean'))} | "
                         f"{_num(q.get('attack_acc_mean'))} |")
    return lines


def _autoattack_line(aa: dict) -> str:
    norm = "L2" if str(aa["norm"]) == "2" else "L-inf"
    return (f"- AutoAttack ({aa['version']}: {', '.join(aa['attacks'])}; {aa['iters']} iterations, Square "
            f"{aa['square_queries']} queries), {norm} eps {aa['eps']:g}: robust accuracy (the field's headline "
            f"number), and the worst case per example over AutoAttack and every other attack of the table inside "
            f"that radius.")


# The robust flags a paired comparison uses: the headline's when the report ran AutoAttack, else MIM's.
PAIRED_FLAGS = ("autoattack", "mim")


def _paired_markdown(report: dict) -> list[str]:
    table = report["table"]
    rows = [r for e in table.values() for r in e["rows"]]
    flag = next((f for f in PAIRED_FLAGS if rows and all(f in r.get("per_example", {}) for r in rows)), None)
    pairs = [(g, base) for g in table if base_defense(g) == "pgn" for base in BASELINES if base in table]
    found = [(g, base, paired(table, g, base, flag)) for g, base in pairs] if flag else []
    found = [f for f in found if f[2]]
    if not found:
        return []
    name = "AutoAttack" if flag == "autoattack" else "MIM"
    lines = ["", "## Paired per-image comparison", "",
             f"Each PGN group against each baseline, run by run of the same seed, on the same test images: how "
             f"many are robust under {name} for one defense only, and the exact two-sided sign test of that "
             f"split. This counts the test images' noise at fixed training seeds; the seeds' is Table 2's.", "",
             "| PGN | baseline | seed | images | robust under PGN only | under the baseline only | sign test p |",
             "|---|---|---|---|---|---|---|"]
    for group, base, per_seed in found:
        for c in per_seed:
            lines.append(f"| {_title(group)} | {_title(base)} | {c['seed']} | {c['images']} | {c['only_a']} | "
                         f"{c['only_b']} | {c['p']:.3g} |")
    return lines


def _completions(report: dict) -> list[tuple[str, dict]]:
    return [(r["run"], r["autoattack"]["standard"]) for e in report["table"].values() for r in e["rows"]
            if (r.get("autoattack") or {}).get("standard")]


def _completion_attacks(report: dict) -> list[str]:
    done = _completions(report)
    return list(done[0][1]["found"]) if done else []


def _standard_autoattack_markdown(report: dict) -> list[str]:
    done = _completions(report)
    if not done:
        return []
    later = _completion_attacks(report)
    first = ", ".join(done[0][1]["first_attacks"])
    lines = ["", "## Standard AutoAttack on a subset", "",
             f"On the same fixed random subset of the test images for every table run: robust accuracy after "
             f"{first} (the table's *AutoAttack acc* on these images), after the standard version's remaining "
             f"attacks, and how many examples each of those broke that {first} had not. Where they broke none, "
             f"the table's *AutoAttack acc* on all its images is the standard version's number; gradient-free "
             f"Square breaking many that the gradient attacks left would point to gradient masking.", "",
             f"| run | images | acc after {first} | standard AutoAttack acc | "
             + " | ".join(f"broken by {a}" for a in later) + " | seconds |",
             "|---|---|---|---|" + "---|" * len(later) + "---|"]
    for run, c in done:
        lines.append(f"| {run} | {c['n']} | {c['first_attacks_accuracy']:.3f} | {c['accuracy']:.3f} | "
                     + " | ".join(str(c["found"][a]) for a in later)
                     + f" | {sum(c['seconds'].values()):.0f} |")
    warned = sorted({w for _, c in done for w in c["warnings"]})
    return lines + ([""] + [f"- Warning: {w}" for w in warned] if warned else [])


def _training_attack_markdown(report: dict) -> list[str]:
    over = report.get("training_attack_over_epochs") or {}
    if not over:
        return []
    lines = ["", "## The training attack over epochs", "",
             "From training's log, on its monitor images, for the first seed of each Table 2 point: the mean L2 "
             "of the perturbations the classifier trained against (at the first, middle and last epoch), the "
             "EMA classifier's accuracy under them at the end, and, for a learned attacker fed a gradient (PGN's "
             "G), how far its x_adv moves when that gradient input is zeroed, as a fraction of the perturbation "
             "(near 0: the generator ignores the gradient), with the input's RMS per pixel.", "",
             "| defense | run | L2, first epoch | L2, middle | L2, last | acc under it | zeroed-gradient shift / L2 "
             "| gradient input RMS |", "|---|---|---|---|---|---|---|---|"]
    for group, entry in over.items():
        epochs = entry["epochs"]
        first, middle, last = epochs[0], epochs[len(epochs) // 2], epochs[-1]
        shift = last.get("monitor_zeroed_grad_shift_l2")
        ratio = shift / last["monitor_delta_l2_mean"] if shift is not None and last["monitor_delta_l2_mean"] else None
        rms = last.get("monitor_grad_input_rms")
        lines.append(f"| {_title(group)} | {entry['run']} | " + " | ".join(
            f"{e['monitor_delta_l2_mean']:.3f} (ep {e['epoch']})" for e in (first, middle, last))
            + f" | {_num(last.get('monitor_adv_acc'))} | {_num(ratio)} | "
            + ("-" if rms is None else f"{rms:.2e}") + " |")
    return lines


def _cost_markdown(report: dict) -> list[str]:
    costs = report.get("costs") or {}
    clean = (costs.get("none") or {}).get("seconds_per_epoch")
    if not costs:
        return []
    lines = ["", "## Training cost", "",
             "An epoch's training steps at each run's median step rate (over training's logging windows; then the "
             "median over the group's runs; without the per-epoch evaluation and the compiling step), and the group's total "
             "training time (every epoch of every run, evaluation excluded). Runs shared the 2 cores with other "
             "work at times, so these are upper bounds.", "",
             "| defense | runs | s/epoch | x clean | training hours |", "|---|---|---|---|---|"]
    for group, cost in costs.items():
        sec = cost["seconds_per_epoch"]
        lines.append(f"| {_title(group)} | {cost['runs']} | {_num(sec, 1)} | "
                     f"{_num(sec / clean if sec and clean else None, 2)} | {cost['training_hours']:.2f} |")
    return lines


def _provenance_lines(report: dict) -> list[str]:
    """Where some of the table's numbers come from: earlier reports (runs whose weights are gone),
    runs finished early at the matched accuracy, runs evaluated without the black-box source."""
    p, lines = report["protocol"], []
    for prior in p.get("prior_reports") or []:
        lines.append(f"- From an earlier report: {', '.join(f'`{r}`' for r in prior['runs'])} evaluated by "
                     f"`{prior['path']}` (made at commit {prior['commit']}) with this protocol: their weights are "
                     f"gone, their training logs matched them to the same epochs here.")
    if p.get("finished_early"):
        lines.append(f"- Finished early (`--stop_at_benign`): {', '.join(f'`{r}`' for r in p['finished_early'])}, "
                     f"trained until their benign accuracy reached the target"
                     + (f" (for at most {p['finished_early_max_epochs']} epochs)" if p.get("finished_early_max_epochs")
                        else "") + ": in Table 2, not in Figures 5 and 2.")
    return black_box_lines(report) + lines


def black_box_lines(report: dict) -> list[str]:
    """Which independent run the black-box columns were crafted on, read off the rows (a report
    made without --source_run can hold rows an earlier report evaluated with one), and which runs
    have no black-box numbers."""
    p = report["protocol"]
    rows = [r for entry in report["table"].values() for r in entry["rows"]]
    names = sorted({source for r in rows if (source := report_prior.black_box_source(r, p))})
    if not names:
        return []
    runs = "runs" if len(names) > 1 else "run"
    lines = [f"- Black-box: every attack also crafted on the independent {runs} {', '.join(f'`{n}`' for n in names)} "
             f"and transferred" + ("." if p.get("source_run") else
                                    " (by the evaluations this report reused, earlier reports' or committed records: this one had no --source_run).")]
    for name, trainings in report_prior.source_trainings(rows, p).items():
        parts = [f"{', '.join(f'`{r}`' for r in t['runs'])}: " + (
                     f"weights {weights} (training created {t['created']})" if weights else
                     "an earlier training (its weights not recorded)")
                 for weights, t in sorted(trainings.items(), key=lambda item: (item[0] is not None, item[0] or ""))]
        lines.append(f"- `{name}` was trained again under its name (a new machine had lost its weights); the rows "
                     f"record which training their black-box columns came from: {'; '.join(parts)}.")
    without = [r["run"] for r in rows if not report_prior.has_black_box(r)]
    if without:
        lines.append(f"- Black-box columns are over the runs that have them: {', '.join(f'`{r}`' for r in without)} "
                     f"were evaluated without the source.")
    return lines


def _evaluation_hours(cost: dict) -> str:
    if not cost["hours"] and cost["unrecorded"]:
        return "the evaluation's attack times not recorded (cached before they were kept)"
    return (f"the evaluation {'at least ' if cost['unrecorded'] else ''}{cost['hours']:.2f} h of attack time (each "
            f"attack as long as it took when first computed)")


def _evaluation_cost_markdown(cost: dict) -> list[str]:
    """The evaluation-cost section from report_tables.evaluation_cost's result."""
    columns = [(h, keys) for h, keys in COST_COLUMNS
               if any(g.get(k) for g in cost["groups"].values() for k in keys)]
    if not columns:
        return []
    lines = ["", "## Evaluation cost", "",
             "Seconds of attack time per table run (mean over the group's runs), as each attack took when it was "
             "first computed: outcomes are cached per run and epoch, so a report that reuses them costs less. "
             "The evaluation ran in float32 on the same 2 cores, beside other work at times.", "",
             "| defense | runs | " + " | ".join(h for h, _ in columns) + " | total |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for group, g in cost["groups"].items():
        cells = [sum(g.get(k, 0.0) for k in keys) for _, keys in columns]
        total = sum(v for k, v in g.items() if k != "runs")
        lines.append(f"| {_title(group)} | {g['runs']} | " + " | ".join(f"{c:.0f}" for c in cells) + f" | {total:.0f} |")
    lines += ["", f"In all: {cost['table_seconds'] / 3600:.2f} h for the table's runs, "
              f"{cost['curve_seconds'] / 3600:.2f} h of CW for the curves ({cost['curve_evaluations']} "
              f"evaluations: Figure 5's points and Figure 2's epochs)"
              + (f", {cost['black_box_seconds'] / 3600:.2f} h crafting the black-box attacks on the source"
                 if cost["black_box_seconds"] else "") + f"; {cost['hours']:.2f} h"
              + (f" (and {cost['unrecorded']} attack outcomes cached without a time, not counted)."
                 if cost["unrecorded"] else ".")]
    return lines


def _package_rank(item) -> tuple:
    """Python, then the packages in training.rundir's order (report.json stores them sorted)."""
    order = ("python",) + rundir.PACKAGES
    return (order.index(item[0]) if item[0] in order else len(order), item[0])


def _key(value) -> str:
    return repr(value)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table2_lines(agg: dict, columns) -> list[str]:
    """Table 2 in markdown, from aggregate_table(): a row per defense, the given TABLE_COLUMNS."""
    lines = ["| defense | n | " + " | ".join(h for _, h, _ in columns) + " | epochs | max off target |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for row in agg.values():
        cells = [_cell(row[key], row["counts"][key], row["n"], 1 if key == "seconds_per_epoch" else 3)
                 for key, _, _ in columns]
        off = f"{row['max_difference']:.3f}" + ("" if row["all_matched"] else " **unmatched**")
        lines.append(f"| {row['label']} | {row['n']} | " + " | ".join(cells) + f" | {_epochs(row['epochs'])} | {off} |")
    return lines


def _cell(pair: tuple, count: int, n: int, digits: int) -> str:
    """Table 2's cell: mean ± std over the seeds that have the column, how many where not all do;
    one value is shown alone (it has no spread to show)."""
    mean, std = pair
    if not count or math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}" if count == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text + (f" ({count} of {n})" if count < n else "")


def _epochs(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs))


def _title(group: str) -> str:
    return group_title(group)
