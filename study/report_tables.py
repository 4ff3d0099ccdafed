"""The report's numbers: Table 2 aggregated over seeds and the robustness curve's points."""
from __future__ import annotations

import math

import numpy as np

from training.defenses import SETTINGS

# Each defense's display name from its declaration (training/defenses/*_settings.py), in table order.
DEFENSE_TITLES = {name: settings.title for name, settings in SETTINGS.items()}



def base_defense(group: str) -> str:
    """The defense of a report group: "pgn[pgn_grad_scale=unit]" -> "pgn" (study.report.group)."""
    return group.split("[", 1)[0]


def group_title(group: str) -> str:
    """A report group's name in tables and legends: "PGN", "PGN (pgn_grad_scale=unit)"."""
    defense, _, variant = group.partition("[")
    title = DEFENSE_TITLES.get(defense, defense)
    return f"{title} ({variant.rstrip(']')})" if variant else title


def in_table_order(groups: dict) -> dict:
    """``groups`` ({report group: ...}) with clean first and the defenses in DEFENSE_TITLES's order,
    each defense's variants after it: report.json stores its keys sorted, and a report rebuilt from
    it reads the same as the one first written."""
    order = list(DEFENSE_TITLES)
    rank = {d: i for i, d in enumerate(order)}
    return dict(sorted(groups.items(), key=lambda kv: (rank.get(base_defense(kv[0]), len(order)), kv[0])))


def ordered_report(report: dict) -> dict:
    """The report with its per-group parts in table order (report_tables.in_table_order)."""
    parts = ("table", "costs", "training_attack_over_epochs")
    ordered = {**report, **{k: in_table_order(report[k]) for k in parts if isinstance(report.get(k), dict)}}
    if isinstance((report.get("protocol") or {}).get("sweeps"), dict):
        ordered["protocol"] = {**report["protocol"], "sweeps": in_table_order(report["protocol"]["sweeps"])}
    return ordered


# Table 2's columns: (key, heading, where in a row the value is).
TABLE_COLUMNS = (
    # The field's headline (--attacks ...,autoattack): AutoAttack's robust accuracy, and the worst
    # case per example over it and every other attack of the table inside its radius.
    ("autoattack_acc", "AutoAttack acc", ("autoattack", "robust_accuracy")),
    # --autoattack_complete N: the standard version on N of the images (eval.autoattack_eval.standard_completion).
    ("autoattack_standard_acc", "standard AutoAttack acc (subset)", ("autoattack", "standard", "accuracy")),
    ("worst_case_acc", "worst-case acc", ("autoattack", "worst_case", "accuracy")),
    ("fgm_acc", "FGM acc", ("attacks", "fgm", "white", "accuracy")),
    ("mim_acc", "MIM acc", ("attacks", "mim", "white", "accuracy")),
    ("fgm_black", "FGM acc (black-box)", ("attacks", "fgm", "black", "accuracy")),
    ("mim_black", "MIM acc (black-box)", ("attacks", "mim", "black", "accuracy")),
    ("deepfool_mean", "DeepFool mean L2", ("attacks", "deepfool", "white", "mean_l2_all")),
    ("cw_mean", "CW mean L2", ("attacks", "cw", "white", "mean_l2_all")),
    ("cw_median", "CW median L2", ("attacks", "cw", "white", "median_l2_all")),
    ("cw_mean_correct", "CW mean L2 (correct)", ("attacks", "cw", "white", "mean_l2_correct")),
    # Below benign accuracy 0.5 the median over all images is 0 (most are wrong before any attack).
    ("cw_median_correct", "CW median L2 (correct)", ("attacks", "cw", "white", "median_l2_correct")),
    ("benign", "benign acc", ("benign_accuracy",)),
    ("seconds_per_epoch", "s/epoch", ("seconds_per_epoch",)),
)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN when there is nothing."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _lookup(row: dict, path: tuple):
    for key in path:
        if row is None:
            return None
        row = row.get(key)
    return row


def aggregate_table(table: dict) -> dict:
    """{defense: {"n": seeds, "label": ..., column: (mean, std), "counts": {column: rows with it},
    "matched": ..., "epochs": [...]}}."""
    out = {}
    for defense, entry in table.items():
        rows = entry["rows"]
        agg = {"n": len(rows), "label": entry["label"], "epochs": [r["match"]["epoch"] for r in rows],
               "max_difference": max(abs(r["match"]["difference"]) for r in rows),
               "all_matched": all(r["match"]["within_tolerance"] for r in rows),
               "masking_failures": sum(not c["passed"] for r in rows for c in r["masking_checks"])}
        agg["counts"] = {}  # how many of the rows have the column (black-box: those evaluated with the source)
        for key, _, path in TABLE_COLUMNS:
            values = [_lookup(r, path) for r in rows]
            agg[key] = mean_std(values)
            agg["counts"][key] = sum(v is not None for v in values)
        out[defense] = agg
    return out


def curve_by_defense(points: list[dict], which: str = "all") -> dict[str, list[dict]]:
    """Figure 5's points: per report group (a defense and its variant) and swept value, benign
    accuracy and rho_cw (mean, std over seeds), sorted by benign accuracy."""
    grouped: dict = {}
    for p in points:
        grouped.setdefault(p.get("group") or p["defense"], {}).setdefault(p["value"], []).append(p)
    curves = {}
    for defense, by_value in grouped.items():
        rows = []
        for value, members in by_value.items():
            benign = mean_std(m["benign_accuracy"] for m in members)
            rho = mean_std(m["cw"][f"mean_l2_{which}"] for m in members)
            attacks = [m.get("training_attack") or {} for m in members]
            rows.append({"value": value, "n": len(members), "benign_mean": benign[0], "benign_std": benign[1],
                         "rho_mean": rho[0], "rho_std": rho[1],
                         "attack_l2_mean": mean_std(a.get("delta_l2") for a in attacks)[0],
                         "attack_acc_mean": mean_std(a.get("accuracy") for a in attacks)[0]})
        curves[defense] = sorted(rows, key=lambda r: r["benign_mean"])
    return curves


def rho_at(curve: list[dict], benign: float) -> float | None:
    """A defense's rho_cw at a benign accuracy, linearly interpolated along its curve (None outside it)."""
    xs = [p["benign_mean"] for p in curve]
    if len(xs) < 2 or not min(xs) <= benign <= max(xs):
        return None
    return float(np.interp(benign, xs, [p["rho_mean"] for p in curve]))


def sign_test(only_a: int, only_b: int) -> float:
    """Exact two-sided sign (McNemar) test of the discordant pairs: P(a split this uneven | 50:50)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(table: dict, a: str, b: str, flag: str) -> list[dict]:
    """Per-image comparison of groups ``a`` and ``b`` by their runs of the same seed, on the report's
    per-example robust flags ``flag`` (both evaluated on the same test images, in the same order):
    images robust under a only and under b only, and the sign test's p. It measures the test
    images' noise at fixed training seeds, not the seeds' (Table 2's standard errors)."""
    rows_b = {r["seed"]: r for r in table.get(b, {}).get("rows", [])}
    out = []
    for row in table.get(a, {}).get("rows", []):
        other = rows_b.get(row["seed"])
        if other is None or flag not in row.get("per_example", {}) or flag not in other.get("per_example", {}):
            continue
        fa, fb = np.asarray(row["per_example"][flag], bool), np.asarray(other["per_example"][flag], bool)
        if fa.shape != fb.shape:
            continue
        only_a, only_b = int(np.sum(fa & ~fb)), int(np.sum(fb & ~fa))
        out.append({"seed": row["seed"], "images": int(fa.size), "only_a": only_a, "only_b": only_b,
                    "p": sign_test(only_a, only_b)})
    return out


# The evaluation-cost table's columns: (heading, the row's attack-time entries it sums).
COST_COLUMNS = (
    ("FGM", ("fgm",)), ("MIM", ("mim",)), ("DeepFool", ("deepfool",)), ("CW", ("cw",)),
    ("masking PGD", ("masking-pgd",)), ("AutoAttack", ("autoattack",)),
    ("AutoAttack curve", ("autoattack-curve",)), ("standard completion", ("autoattack-standard",)),
)


def _finite(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _unrecorded(report: dict) -> int:
    """Attack outcomes of the report without a recorded time (cached before times were kept)."""
    outcomes = [a.get("white") for e in report["table"].values() for r in e["rows"] for a in (r.get("attacks") or {}).values()]
    outcomes += [r.get("masking_pgd") for e in report["table"].values() for r in e["rows"]]
    outcomes += [p["cw"] for p in report.get("curve_points") or []]
    return sum(1 for o in outcomes if o is not None and not _finite(o.get("seconds")))


def row_attack_seconds(row: dict) -> dict[str, float]:
    """The seconds each white-box attack of a table row took when it was computed (a cached attack
    keeps the time of its first computation; unknown times count 0)."""
    out = {a: _finite((r.get("white") or {}).get("seconds")) for a, r in (row.get("attacks") or {}).items()}
    out["masking-pgd"] = _finite((row.get("masking_pgd") or {}).get("seconds"))
    aa = row.get("autoattack") or {}
    out["autoattack"] = sum(_finite(s) for k, s in (aa.get("seconds") or {}).items() if k != "clean")
    out["autoattack-curve"] = sum(_finite(p.get("seconds")) for p in aa.get("curve") or [])
    out["autoattack-standard"] = sum(_finite(s) for s in ((aa.get("standard") or {}).get("seconds") or {}).values())
    return out


def evaluation_cost(report: dict) -> dict:
    """The attack time behind a report, from the seconds its outcomes recorded: per table group the
    mean over its runs of each attack's seconds; the black-box attacks' crafting on the source (once
    per crafting: targets that shared one adversarial set share its recorded time); the curves' CW
    (Figure 5's points and Figure 2's epochs); the total in hours; and how many outcomes had no
    recorded time (``unrecorded``: cached before times were kept, counted 0)."""
    groups = {}
    table_seconds = 0.0
    crafting: dict[str, set] = {}
    for group, entry in report["table"].items():
        rows = [row_attack_seconds(r) for r in entry["rows"]]
        groups[group] = {"runs": len(rows), **{k: float(np.mean([r.get(k, 0.0) for r in rows])) for k in
                                               {k for r in rows for k in r}}}
        table_seconds += sum(sum(r.values()) for r in rows)
        for r in entry["rows"]:
            for attack, result in (r.get("attacks") or {}).items():
                seconds = _finite((result.get("black") or {}).get("seconds"))
                if seconds:
                    crafting.setdefault(attack, set()).add(seconds)
    black_seconds = sum(sum(s) for s in crafting.values())
    curves = [p["cw"] for p in report.get("curve_points") or []]
    curves += [p["cw"] for p in (report.get("fgm_over_epochs") or {}).get("points") or []]
    curve_seconds = sum(_finite(c.get("seconds")) for c in curves)
    return {"groups": groups, "table_seconds": table_seconds, "black_box_seconds": black_seconds,
            "curve_seconds": curve_seconds, "curve_evaluations": len(curves), "unrecorded": _unrecorded(report),
            "hours": round((table_seconds + black_seconds + curve_seconds) / 3600, 3)}
