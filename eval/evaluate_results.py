"""`--mode eval`'s output: results.md (the paper's Table 2 layout, masking warnings beside it) and the PNG plots."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from training import writes  # noqa: E402

ATTACK_TITLES = {"fgm": "FGM", "mim": "MIM", "pgd": "PGD", "deepfool": "DeepFool", "cw": "CW-L2"}
ENGINES = {"compiled": "this project's compiled attacks (attacks/)", "cleverhans": "cleverhans.tf2.attacks (the library)"}
ROBUST_RULE = ("W-box and B-box acc: an example counts as robust only if the model classified it correctly both "
               "before and after the attack, so no attack scores above benign accuracy (DeepFool, which does not "
               "use the label, can push a misclassified example onto its true label; that is not counted).")
L2_SETS = ("Mean / median L2 are over the successful adversarial examples. **all**: every example the attack "
           "left misclassified, including those the model already got wrong (the paper's reference code); "
           "**correct**: only examples classified correctly before the attack.")


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_markdown(results: dict) -> str:
    protocol = results["protocol"]
    lines = [
        f"# Evaluation: {protocol['dataset']}, {protocol['n']} test examples",
        "",
        "White-box attacks on each run's EMA classifier (float32). "
        + (f"Black-box: crafted on `{protocol['source_run']}` and transferred." if protocol["source_run"] else
           "No black-box source given (`--source_run`): the B-box column is empty.")
        + f" Settings: {protocol['settings_line']}.",
        "",
        L2_SETS,
        "",
        "| run | defense | attack | W-box acc | mean L2 (all) | median L2 (all) | mean L2 (correct) "
        "| median L2 (correct) | B-box acc | benign acc | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        for attack, result in run["attacks"].items():
            white, black = result["white"], result.get("black")
            lines.append(
                f"| {name} | {run['defense']} | {ATTACK_TITLES.get(attack, attack)} | {_fmt(white['accuracy'])} "
                f"| {_fmt(white['mean_l2_all'])} | {_fmt(white['median_l2_all'])} | {_fmt(white['mean_l2_correct'])} "
                f"| {_fmt(white['median_l2_correct'])} | {_fmt(black['accuracy']) if black else '-'} "
                f"| {_fmt(run['benign_accuracy'])} | {_fmt(run['seconds_per_epoch'], 1)} |")
    engine = protocol.get("attack_engine", "compiled")
    lines += ["", ROBUST_RULE, "", f"FGM and MIM engine: `{engine}`, {ENGINES[engine]}."]
    lines += autoattack_markdown(results) + attack_times_markdown(results)
    lines += ["", "## Gradient-masking checks", ""]
    for name, run in results["runs"].items():
        failed = [c for c in run["masking_checks"] if not c["passed"]]
        verdict = f"**WARNING: {len(failed)} check(s) failed**" if failed else "all passed"
        note = run.get("masking_note")
        lines.append(f"- `{name}`: {verdict}" + (f"; {note}" if note else ""))
        for check in run["masking_checks"]:
            mark = "ok" if check["passed"] else "FAILED"
            lines.append(f"  - {mark}: {check['check']} ({check['detail']})")
    if results.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def autoattack_markdown(results: dict) -> list[str]:
    runs = {n: r["autoattack"] for n, r in results["runs"].items() if "autoattack" in r}
    if not runs:
        return []
    first = next(iter(runs.values()))
    stages = first["attacks"]
    lines = ["", "## AutoAttack", "",
             f"{first['version']} version ({', '.join(stages)}), {first['threat_model']} eps {first['eps']:g}: each "
             "attack runs on the examples still robust, so each column is the robust accuracy after it. **Worst "
             "case**: robust to AutoAttack and to every other attack of this evaluation whose adversarial lies "
             "inside the ball (an L2 norm at most eps; for L-inf that is sufficient).", "",
             "| run | clean acc | " + " | ".join(f"after {s}" for s in stages) + " | AutoAttack acc | worst case |"
             " attacks in the worst case |",
             "|---|---|" + "---|" * len(stages) + "---|---|---|"]
    for name, aa in runs.items():
        after = " | ".join(_fmt(aa["accuracy_after"].get(s)) for s in stages)
        lines.append(f"| {name} | {_fmt(aa['clean_accuracy'])} | {after} | **{_fmt(aa['robust_accuracy'])}** "
                     f"| {_fmt(aa['worst_case']['accuracy'])} | {', '.join(aa['worst_case']['attacks_counted'])} |")
    for name, aa in runs.items():
        if aa.get("curve"):
            points = ", ".join(f"{p['eps']:.3g}: {p['accuracy']:.3f}" for p in aa["curve"])
            lines.append(f"\nAPGD-CE robust accuracy against eps, `{name}`: {points}.")
        for warning in aa.get("warnings", []):
            lines.append(f"\nAutoAttack warned on `{name}`: {warning}")
    return lines


def attack_times_markdown(results: dict) -> list[str]:
    """Seconds each attack took on each run (as first computed: a cached outcome keeps its time)."""
    rows = []
    for name, run in results["runs"].items():
        times = {ATTACK_TITLES.get(a, a): r["white"].get("seconds") for a, r in run["attacks"].items()}
        if "autoattack" in run:
            times.update({f"AutoAttack {s}": run["autoattack"]["seconds"].get(s) for s in run["autoattack"]["attacks"]})
        rows.append((name, times))
    columns = list(dict.fromkeys(c for _, times in rows for c in times))
    if not columns:
        return []
    lines = ["", "## Seconds per attack", "", "| run | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_fmt(times.get(c), 1) for c in columns) + " |" for name, times in rows]
    return lines


def plot_budget_curves(results: dict, out_dir: Path) -> list[str]:
    """Accuracy against the L2 budget, from each minimum-norm attack (Figure 4's curve)."""
    paths = []
    for attack in ("deepfool", "cw"):
        runs = {n: r for n, r in results["runs"].items() if attack in r.get("budget_curves", {})}
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name, run in runs.items():
            curve = run["budget_curves"][attack]
            ax.plot(curve["budgets"], curve["accuracy"], label=f"{name}")
        # From 0 to the benign accuracy: on a narrower axis one example of a weak model looks like a cliff.
        top = max(max(run.get("benign_accuracy", 0.0), max(run["budget_curves"][attack]["accuracy"]))
                  for run in runs.values())
        ax.set_ylim(0.0, max(top, 0.01) * 1.05)
        protocol = results["protocol"]
        paths.append(_save(fig, ax, "L2 budget", f"{ATTACK_TITLES[attack]}: {protocol['dataset']}, n={protocol['n']}",
                           out_dir / f"accuracy_vs_l2_{attack}.png"))
    return paths


def plot_figure3(name: str, points: dict, protocol: dict, out_dir: Path) -> str:
    """Accuracy against mean perturbation norm: PGN (over c_L) beside FGM and PGD (over eps)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, marker in (("pgn", "o"), ("fgm", "s"), ("pgd", "^")):
        pts = sorted(points.get(method, []), key=lambda p: p["mean_l2"])
        if pts:
            ax.plot([p["mean_l2"] for p in pts], [p["accuracy"] for p in pts], marker=marker,
                    label=method.upper())
    return _save(fig, ax, "mean L2 of the perturbation", f"attacks on {name}: {protocol['dataset']}, n={protocol['n']}",
                 out_dir / f"figure3_{name}.png")


def _save(fig, ax, xlabel: str, title: str, path: Path) -> str:
    """Every plot says which dataset and how many examples it used, in its title."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    try:
        with writes.guarded(path, f"the plot {Path(path).name}", 2_000_000, [tmp],
                            "free space and give the same command: the attacks already cached are not run again"):
            fig.savefig(tmp, dpi=120, format="png")
            tmp.replace(path)
    finally:
        plt.close(fig)
    return str(path)


def budget_grid(outcomes) -> np.ndarray:
    """Budgets up to a little past the 99th percentile of the runs' perturbation norms (the rare
    far outliers would flatten the part of the curve that differs between defenses)."""
    norms = np.concatenate([o.l2 for o in outcomes] + [np.zeros(1, np.float32)])
    return np.linspace(0.0, 1.05 * max(float(np.percentile(norms, 99)), 1e-3), 50)
