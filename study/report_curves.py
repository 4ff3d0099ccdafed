"""The report's plots: the robustness curve (Figure 5) and the FGM-AT pair (Figure 2)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from study.report_tables import base_defense, curve_by_defense, group_title  # noqa: E402
from training.defenses import marker  # noqa: E402  (each defense declares its plot marker)


def draw(report: dict, out_dir: Path) -> list[str]:
    paths = [_figure5(report, out_dir / "figure5_robustness_curve.png")]
    fgm_points = [p for p in report["curve_points"] if (p.get("group") or p["defense"]) == "fgm"]
    if fgm_points:
        paths.append(_figure2(report, fgm_points, out_dir / "figure2_fgm.png"))
    if report.get("training_attack_over_epochs"):
        paths.append(_training_attack(report, out_dir / "training_attack.png"))
    return paths


def _training_attack(report: dict, path: Path) -> str:
    """Left: the mean L2 of the perturbations each table point's first run trained against, per
    epoch; right: for learned attackers fed a gradient, how far x_adv moves when that gradient is
    zeroed, as a fraction of the perturbation (0: the attacker ignores it)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (group, entry) in enumerate(report["training_attack_over_epochs"].items()):
        epochs = entry["epochs"]
        style = dict(marker=marker(base_defense(group)), label=group_title(group), markersize=4,
                     color=colours[i % len(colours)],  # a group keeps its colour in both panels
                     linestyle="--" if group != base_defense(group) else "-")
        left.plot([p["epoch"] for p in epochs], [p["monitor_delta_l2_mean"] for p in epochs], **style)
        zeroed = [p for p in epochs if "monitor_zeroed_grad_shift_l2" in p and p["monitor_delta_l2_mean"]]
        if zeroed:
            right.plot([p["epoch"] for p in zeroed],
                       [p["monitor_zeroed_grad_shift_l2"] / p["monitor_delta_l2_mean"] for p in zeroed], **style)
    left.set_xlabel("epoch")
    left.set_ylabel("training perturbation, mean L2")
    right.set_xlabel("epoch")
    right.set_ylabel("x_adv shift with G's gradient input zeroed\n/ perturbation L2")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"the attack each classifier trained against (monitor images, training's log)\n"
                 f"{report['protocol']['dataset']}", fontsize=9)
    return _save(fig, path)


def _figure5(report: dict, path: Path) -> str:
    """Benign accuracy (x) against rho_cw (y), one line per defense across its sweep, error bars
    over seeds; left the paper's rho (all misclassified examples), right over examples correct
    before the attack."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, which in zip(axes, ("all", "correct")):
        for group, points in curve_by_defense(report["curve_points"], which).items():
            variant = group != base_defense(group)  # a variant: its defense's marker, hollow and dashed
            ax.errorbar([p["benign_mean"] for p in points], [p["rho_mean"] for p in points],
                        xerr=[p["benign_std"] for p in points], yerr=[p["rho_std"] for p in points],
                        marker=marker(base_defense(group)), capsize=3, label=group_title(group),
                        linestyle="--" if variant else "-", markerfacecolor="none" if variant else None)
            for p in points:
                if p["value"] is not None:
                    ax.annotate(f"{p['value']:g}", (p["benign_mean"], p["rho_mean"]), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel("benign accuracy")
        ax.set_ylabel(f"CW-L2 mean norm (rho_cw, {which})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(_title(report, "robustness curve (Figure 5); labels: eps or c_L; bars: std over seeds"), fontsize=9)
    return _save(fig, path)


def _figure2(report: dict, fgm_points: list[dict], path: Path) -> str:
    """Left: FGM-AT's sweep, benign accuracy against the CW norm; right: one FGM-AT run over its
    epochs, benign accuracy and rho_cw."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for p in fgm_points:
        left.scatter(p["cw"]["mean_l2_all"], p["benign_accuracy"], color="C1", marker="s")
        label = f"seed {p['seed']}" if p["value"] is None else f"eps {p['value']:g}, seed {p['seed']}"
        left.annotate(label, (p["cw"]["mean_l2_all"], p["benign_accuracy"]),
                      fontsize=6, textcoords="offset points", xytext=(3, 3))
    left.set_xlabel("CW-L2 mean norm (rho_cw, all)")
    left.set_ylabel("benign accuracy")
    left.set_title("FGM-AT across eps", fontsize=9)
    left.grid(alpha=0.3)
    epochs = report["fgm_over_epochs"]["points"]
    if epochs:
        xs = [p["epoch"] for p in epochs]
        right.plot(xs, [p["benign_accuracy"] for p in epochs], marker="o", color="C0", label="benign accuracy")
        right.set_ylabel("benign accuracy", color="C0")
        twin = right.twinx()
        twin.plot(xs, [p["cw"]["mean_l2_all"] for p in epochs], marker="s", color="C3", label="rho_cw (all)")
        twin.set_ylabel("rho_cw (all)", color="C3")
        right.set_xlabel("epoch")
        right.set_title(f"{report['fgm_over_epochs']['run']} over epochs", fontsize=9)
        right.grid(alpha=0.3)
    fig.suptitle(_title(report, "FGM-AT (Figure 2)"), fontsize=9)
    return _save(fig, path)


def _title(report: dict, what: str) -> str:
    """Says which test images each axis is measured on: the benign accuracies are training's own
    records (its --test_limit subset), rho_cw is the report's."""
    protocol = report["protocol"]
    subsets = list(protocol.get("recorded_benign_subsets") or {})
    recorded = (subsets[0] if len(subsets) == 1 else "DIFFERENT subsets per run, not comparable" if subsets
                else "its own test subset")
    # One line each: the dataset, and where each axis is measured (a long folder path must not
    # push the rest off the figure).
    return (f"{what}\n{protocol['dataset']}\nbenign accuracy as training recorded it on {recorded}; "
            f"rho_cw on {protocol.get('curve_test_images', protocol['test_images'])} of the report's "
            f"{protocol['test_images']} test images")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)

