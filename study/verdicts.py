"""The paper's claims judged against a report's numbers (the statistics; report_markdown renders them).

A difference between two defenses counts as *supported* when it has the paper's sign and
exceeds two standard errors of the difference of seed means (sqrt(s1^2/n1 + s2^2/n2)),
*contradicted* when it is that far the other way, and *inconclusive* otherwise. With one seed on
either side there is no standard error: the verdict then goes by the sign alone and says so
("supported (one seed)").
"""
from __future__ import annotations

import math

from study.published import PAPER, PaperTable, rounded
from study.report_tables import aggregate_table, base_defense, curve_by_defense, group_title, ordered_report, rho_at

BASELINES = ("fgm", "pgd")


NEGLIGIBLE_L2 = 1e-3  # an L2 norm below a quarter of one 8-bit step in a single pixel (1/255)


def compare(a: tuple, b: tuple, n_a: int, n_b: int) -> tuple[float, float]:
    """(mean_a - mean_b, two standard errors of that difference; NaN with one seed on either side)."""
    if n_a < 2 or n_b < 2:
        return a[0] - b[0], math.nan
    return a[0] - b[0], 2 * math.sqrt((a[1] ** 2) / n_a + (b[1] ** 2) / n_b)


def verdict(difference: float, margin: float) -> str:
    if math.isnan(difference):
        return "cannot be assessed"
    if math.isnan(margin):  # one seed: the sign is all there is
        return ("supported" if difference > 0 else "contradicted" if difference < 0 else "inconclusive") + \
            " (one seed)"
    if difference > margin:
        return "supported"
    if difference < -margin:
        return "contradicted"
    return "inconclusive"


def assess(report: dict) -> list[dict]:
    report = ordered_report(report)
    agg = aggregate_table(report["table"])
    claims = []

    def pairwise(claim, paper, key, better, worse_list):
        if better not in agg:
            return
        parts, verdicts = [], []
        for worse in worse_list:
            if worse not in agg:
                continue
            diff, margin = compare(agg[better][key], agg[worse][key], agg[better]["counts"][key],
                                   agg[worse]["counts"][key])
            v = verdict(diff, margin)
            said = f"difference {diff:+.3f}, {_two_se(margin)}: {v}"
            if key.endswith("median") and max(agg[better][key][0], agg[worse][key][0]) < NEGLIGIBLE_L2:
                # Below benign accuracy 0.5 most images are misclassified before any attack: a
                # median over all of them is ~0 (CW's first step, ~1e-5) in every row and says
                # nothing of the perturbations.
                v, said = "cannot be assessed", f"both under {NEGLIGIBLE_L2:g}: over half the images are " \
                                                "misclassified before the attack, so the median over all of them is ~0"
            verdicts.append(v)
            parts.append(f"{_title(better)} {agg[better][key][0]:.3f} vs {_title(worse)} {agg[worse][key][0]:.3f} "
                         f"({said})")
        if verdicts:
            overall = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
            claims.append({"claim": claim, "paper": paper, "ours": "; ".join(parts), "verdict": overall})

    paper = paper_table(report)
    pgn_groups = [g for g in agg if base_defense(g) == "pgn"]  # the paper's PGN, then its variants
    for pgn in pgn_groups:
        name = _title(pgn)
        where = f"({paper.table})"
        pairwise(f"{name}'s classifier needs larger CW-L2 perturbations (rho_cw) than FGM-AT's and PGD-AT's at "
                 f"the same benign accuracy {where}.", f"{paper.dataset} CW mean L2: {paper.values('cw_mean')}.",
                 "cw_mean", pgn, BASELINES)
        pairwise(f"{name}'s median CW-L2 perturbation is larger than FGM-AT's and PGD-AT's {where}.",
                 f"{paper.dataset} CW median L2: {paper.values('cw_median')}.", "cw_median", pgn, BASELINES)
        pairwise(f"{name}'s classifier needs larger DeepFool perturbations than FGM-AT's and PGD-AT's {where}.",
                 f"{paper.dataset} DeepFool mean L2: {paper.values('deepfool_mean')}.", "deepfool_mean", pgn,
                 BASELINES)
        pairwise(f"{name} keeps more accuracy under white-box FGM than FGM-AT and PGD-AT {where}.",
                 f"{paper.dataset} FGM accuracy: {paper.values('fgm_acc')}.", "fgm_acc", pgn, BASELINES)
        pairwise(f"{name} keeps more accuracy under white-box MIM than FGM-AT and PGD-AT {where}.",
                 f"{paper.dataset} MIM accuracy: {paper.values('mim_acc')}.", "mim_acc", pgn, BASELINES)
        for key, attack in (("fgm_black", "FGM"), ("mim_black", "MIM")):
            pairwise(f"{name} keeps more accuracy under black-box {attack} (crafted on an independently trained "
                     f"clean network) than FGM-AT and PGD-AT {where}.",
                     f"{paper.dataset} black-box {attack} accuracy: {paper.values(key)}.", key, pgn, BASELINES)
        if not math.isnan(agg[pgn]["autoattack_acc"][0]):
            pairwise(f"{name} keeps more accuracy under AutoAttack than FGM-AT and PGD-AT.",
                     "not measured (its claim that PGN is the more robust, judged by the field's standard "
                     "evaluation: robust accuracy at the AutoAttack radius).", "autoattack_acc", pgn,
                     BASELINES)
        if not math.isnan(agg[pgn]["autoattack_standard_acc"][0]):
            pairwise(f"{name} keeps more accuracy under the standard AutoAttack than FGM-AT and PGD-AT (on "
                     f"the report's subset of {report['protocol'].get('autoattack_complete')} images).",
                     "not measured.", "autoattack_standard_acc", pgn, BASELINES)
    for defense in ("fgm", "pgd", *pgn_groups):
        pairwise(f"{_title(defense)} raises rho_cw over clean training at the same benign accuracy.",
                 f"{paper.dataset} CW mean L2: {paper.values('cw_mean', (base_defense(defense), 'none'))}.",
                 "cw_mean", defense, ("none",))
    if "fgm" in agg and "pgd" in agg:
        diff, margin = compare(agg["fgm"]["cw_mean"], agg["pgd"]["cw_mean"], agg["fgm"]["counts"]["cw_mean"],
                               agg["pgd"]["counts"]["cw_mean"])
        same = abs(diff) <= max(0.0 if math.isnan(margin) else margin, 0.05 * agg["pgd"]["cw_mean"][0])
        fgm, pgd = paper.value("fgm", "cw_mean"), paper.value("pgd", "cw_mean")
        claims.append({"claim": "Under this L2 threat model FGM-AT and PGD-AT end up about equally robust.",
                       "paper": f"{paper.dataset} CW mean L2 {rounded(fgm)} vs {rounded(pgd)} "
                                f"({abs(fgm - pgd) / pgd:.0%} apart).",
                       "ours": f"FGM-AT {agg['fgm']['cw_mean'][0]:.3f} vs PGD-AT {agg['pgd']['cw_mean'][0]:.3f} "
                               f"(difference {diff:+.3f}, {_two_se(margin)}; about equal: within 5% or 2 SE)",
                       "verdict": ("supported" if same else "contradicted") +
                                  (" (one seed)" if math.isnan(margin) else "")})
    claims.extend(_curve_claim(report, pgn) for pgn in pgn_groups)
    claims.append(_cost_claim(agg, paper))
    return [c for c in claims if c]


def _curve_claim(report: dict, pgn: str = "pgn") -> dict | None:
    """Figure 5: where the curves of PGN (group ``pgn``: the paper's or a variant) and a baseline
    cover the same benign accuracies, is PGN's rho_cw higher?"""
    curves = curve_by_defense(report["curve_points"], "all")
    if pgn not in curves:
        return None
    name = _title(pgn)
    parts, verdicts = [], []
    for base in BASELINES:
        if base not in curves:
            continue
        lo = max(min(p["benign_mean"] for p in curves[c]) for c in (pgn, base))
        hi = min(max(p["benign_mean"] for p in curves[c]) for c in (pgn, base))
        grid = [lo + (hi - lo) * i / 10 for i in range(11)] if hi > lo else []
        gaps = [(rho_at(curves[pgn], b), rho_at(curves[base], b)) for b in grid]
        gaps = [p - q for p, q in gaps if p is not None and q is not None]
        if not gaps:
            parts.append(_one_point(curves, pgn, base))
            verdicts.append("cannot be assessed")
            continue
        above = sum(g > 0 for g in gaps) / len(gaps)
        verdicts.append("supported" if above == 1 else "contradicted" if above == 0 else "mixed")
        parts.append(f"over benign accuracy {lo:.3f}-{hi:.3f}, {name}'s rho_cw is above {_title(base)}'s at "
                     f"{above:.0%} of 11 points (mean gap {sum(gaps) / len(gaps):+.3f})")
    if not verdicts:
        return None
    return {"claim": f"{name}'s robustness curve (benign accuracy against rho_cw) lies above FGM-AT's and PGD-AT's "
                     "(Figure 5).", "paper": f"{paper_table(report).dataset} ({paper_table(report).curve_figure}): PGN above both across the sweep.",
            "ours": "; ".join(parts), "verdict": _both(verdicts)}


def _one_point(curves: dict, pgn: str, base: str) -> str:
    """Why PGN's and a baseline's curves cannot be compared; where one of them is a single point
    inside the other's benign-accuracy range, the two rho_cw there (a point, not a curve: no verdict)."""
    short = [c for c in (pgn, base) if len(curves[c]) < 2]
    if not short:
        return f"{_title(pgn)}'s and {_title(base)}'s curves share no benign-accuracy range"
    text = f"{' and '.join(map(_title, short))} {'has' if len(short) == 1 else 'have'} one curve point"
    if len(short) == 1:
        (point,), other = curves[short[0]], base if short[0] == pgn else pgn
        rho = rho_at(curves[other], point["benign_mean"])
        if rho is not None:
            at = {short[0]: point["rho_mean"], other: rho}
            text += (f" (at its benign accuracy {point['benign_mean']:.3f}: {_title(pgn)} {at[pgn]:.3f}, "
                     f"{_title(base)} {at[base]:.3f})")
    return text


def _both(verdicts: list[str]) -> str:
    """The verdict on "above FGM-AT's *and* PGD-AT's" from one verdict per baseline: below either
    curve everywhere they overlap contradicts it whatever the other shows; it is supported only when
    every baseline supports it; a baseline whose curve cannot be compared yet leaves it unassessed."""
    if "contradicted" in verdicts:
        return "contradicted"
    if "mixed" in verdicts:
        return "mixed"
    return "supported" if set(verdicts) == {"supported"} else "cannot be assessed"


def paper_table(report: dict) -> PaperTable:
    """The paper's table the report's numbers are set beside (its protocol's; CIFAR-10's Table 3 for
    reports made before the protocol named one)."""
    return PAPER[(report.get("protocol") or {}).get("paper_table", "cifar10")]


def _cost_claim(agg: dict, paper: PaperTable) -> dict | None:
    if not {"none", "pgn", "pgd"} <= set(agg):
        return None
    clean, pgn, pgd = (agg[d]["seconds_per_epoch"][0] for d in ("none", "pgn", "pgd"))
    if any(math.isnan(v) or v <= 0 for v in (clean, pgn, pgd)):
        return None
    ordered = clean < pgn < pgd
    return {"claim": "PGN trains much faster than PGD-AT (cost between clean and PGD-AT).",
            "paper": _paper_cost(paper),
            "ours": f"clean {clean:.1f}, PGN {pgn:.1f} ({pgn / clean:.1f}x), PGD-AT {pgd:.1f} ({pgd / clean:.1f}x); "
                    f"PGN/PGD {pgn / pgd:.2f} (an epoch's training steps at each run's median step rate, without the "
                    f"per-epoch evaluation and the compiling step)",
            "verdict": "supported" if ordered else "contradicted"}


def _paper_cost(paper: PaperTable) -> str:
    clean, pgn, pgd = (paper.value(d, "seconds_per_epoch") for d in ("none", "pgn", "pgd"))
    return (f"s/epoch on {paper.dataset}: clean {clean:.1f}, PGN {pgn:.1f} ({pgn / clean:.1f}x), PGD-AT {pgd:.1f} "
            f"({pgd / clean:.1f}x); PGN/PGD {pgn / pgd:.2f}.")


def _two_se(margin: float) -> str:
    return "no standard error with one seed" if math.isnan(margin) else f"2 SE {margin:.3f}"



def _title(group: str) -> str:
    return group_title(group)
