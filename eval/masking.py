"""Checks that warn when a robustness number may come from gradient masking (Athalye et al.
2018's warning signs), run on every evaluation, beyond the paper's protocol.

Each check returns a record {"check", "passed", "detail"}; a failed one is shown as a warning
next to the numbers it casts doubt on, never dropped.
"""
from __future__ import annotations

LARGE_BUDGET_MAX_ACCURACY = 0.05   # PGD with an L2 budget of ~5 (a visible change) must win
ITERATIVE_SLACK = 0.02             # MIM may not be weaker than one FGM step at the same eps
TRANSFER_SLACK = 0.02              # white-box may not be weaker than black-box
MIN_NORM_SUCCESS = 0.95            # unbounded minimum-norm attacks must (nearly) always succeed
ZERO_GRADIENT_MAX_FRACTION = 0.10  # input gradients exactly zero for more than this: masking
# AutoAttack's own warning is at 0.2 pp on RobustBench-sized test sets; 0.5 pp leaves room for the
# few examples a 1,000-image CPU evaluation decides by chance.
SQUARE_SLACK = 0.005               # gradient-free Square may win on at most this fraction beyond all white-box
# APGD-T's targeted DLR loss is scale-invariant: far stronger than CE means CE gradients are saturated.
DLR_SLACK = 0.05
CURVE_SLACK = 0.01                 # APGD-CE's robust accuracy may not rise by more than this with eps
# Below twice chance (10 classes: 0.2) a model has learnt next to nothing: attacks on it succeed or
# fail for reasons that say nothing about masking (an untrained smoke run's CW "fails" at 0.74
# success). Capped at halfway from chance to 1, so that two classes need 0.75, not 1.0.
MEANINGFUL_BENIGN_TIMES_CHANCE = 2.0


def run_checks(summary: dict, cfg) -> list[dict]:
    """``summary``: one run's evaluation ({"attacks": {name: {"white": ..., "black": ...}}, ...})."""
    checks = []
    attacks = summary["attacks"]
    if "masking_pgd" in summary:
        acc = summary["masking_pgd"]["accuracy"]
        checks.append(_check(
            f"PGD with L2 budget {cfg.masking_eps:g} ({cfg.masking_iters} steps) brings accuracy near 0",
            acc <= LARGE_BUDGET_MAX_ACCURACY, f"accuracy {acc:.3f} (limit {LARGE_BUDGET_MAX_ACCURACY})"))
    if "fgm" in attacks and "mim" in attacks and cfg.fgm_eps == cfg.mim_eps:
        fgm, mim = attacks["fgm"]["white"]["accuracy"], attacks["mim"]["white"]["accuracy"]
        checks.append(_check("iterative MIM is at least as strong as one-step FGM at the same eps",
                             mim <= fgm + ITERATIVE_SLACK, f"MIM {mim:.3f} vs FGM {fgm:.3f}"))
    for name, result in attacks.items():
        if "black" in result:
            white, black = result["white"]["accuracy"], result["black"]["accuracy"]
            checks.append(_check(f"white-box {name} is at least as strong as black-box {name}",
                                 white <= black + TRANSFER_SLACK, f"white {white:.3f} vs black {black:.3f}"))
        if name in ("cw", "deepfool"):
            rate = result["white"]["success_rate_correct"]
            checks.append(_check(f"{name} succeeds on (nearly) every correctly classified example",
                                 rate is not None and rate >= MIN_NORM_SUCCESS,
                                 f"success {rate if rate is None else round(rate, 3)} (limit {MIN_NORM_SUCCESS})"))
    if "autoattack" in summary:
        checks += _autoattack_checks(summary["autoattack"])
    if "zero_gradient_fraction" in summary:
        fraction = summary["zero_gradient_fraction"]
        checks.append(_check("input gradients are non-zero for most test examples",
                             fraction <= ZERO_GRADIENT_MAX_FRACTION,
                             f"{fraction:.1%} exactly zero (limit {ZERO_GRADIENT_MAX_FRACTION:.0%})"))
    return checks


def _autoattack_checks(aa: dict) -> list[dict]:
    checks = []
    if "square_only_fraction" in aa:
        fraction = aa["square_only_fraction"]
        checks.append(_check("gradient-free Square does not beat the white-box attacks",
                             fraction <= SQUARE_SLACK,
                             f"Square alone broke {fraction:.1%} of the examples (limit {SQUARE_SLACK:.1%})"))
    if "apgd_t_gain" in aa:
        gain = aa["apgd_t_gain"]
        checks.append(_check("APGD-T (scale-invariant DLR) is not much stronger than APGD-CE",
                             gain <= DLR_SLACK, f"APGD-T lowered robust accuracy by {gain:.3f} after "
                             f"APGD-CE (limit {DLR_SLACK})"))
    points = aa.get("curve") or []
    if len(points) > 1:
        rises = [(a, b) for a, b in zip(points, points[1:]) if b["accuracy"] > a["accuracy"] + CURVE_SLACK]
        text = ", ".join(f"{p['eps']:.3g}: {p['accuracy']:.3f}" for p in points)
        checks.append(_check("APGD-CE robust accuracy falls monotonically with eps", not rises,
                             f"eps: accuracy {text} (slack {CURVE_SLACK})"))
    return checks


def low_accuracy_note(benign_accuracy: float, num_classes: int) -> str | None:
    """A note for beside the checks when the model is too inaccurate for them to mean anything."""
    chance = 1.0 / num_classes
    threshold = min(MEANINGFUL_BENIGN_TIMES_CHANCE * chance, (1.0 + chance) / 2)
    if benign_accuracy >= threshold:
        return None
    return (f"benign accuracy {benign_accuracy:.3f} is below {threshold:.3f} ({MEANINGFUL_BENIGN_TIMES_CHANCE:g}x "
            f"chance, at most halfway from chance to 1): too low for these checks to mean anything")


def _check(name: str, passed: bool, detail: str) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail}
