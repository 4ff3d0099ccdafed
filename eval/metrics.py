"""Numbers from per-example attack outcomes: accuracy, success, rho (eq. 6), budget curves."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One attack on one model, per test example: labels, predictions before and after, ||delta||_2;
    and the seconds the attack took (nan: not known, e.g. cached before times were kept)."""
    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    l2: np.ndarray
    seconds: float = float("nan")

    @property
    def robust(self) -> np.ndarray:
        """Per example: correct before and after the attack."""
        return (self.clean_pred == self.labels) & (self.adv_pred == self.labels)

    def arrays(self) -> dict:
        return dataclasses.asdict(self)


def summarize(outcome: Outcome) -> dict:
    """Accuracy after the attack, success rates, and the mean (rho, eq. 6) and median L2 of the
    successful perturbations over two sets.

    Accuracy counts an example as robust only if the model classified it correctly both before and
    after the attack: DeepFool (which never sees the label) can push a misclassified example onto
    its true label, and that must not make an attack score above benign accuracy. The L2 sets:

    - ``all``: every example the attack left misclassified, those the model already got wrong
      included (their norm is about 0): the figure the paper's reference code reports;
    - ``correct``: only examples the model classified correctly before the attack.
    """
    correct_before = outcome.clean_pred == outcome.labels
    fooled = outcome.adv_pred != outcome.labels
    out = {
        "n": int(len(outcome.labels)),
        "accuracy": float(np.mean(correct_before & ~fooled)),
        "benign_accuracy": float(np.mean(correct_before)),
        "success_rate": float(np.mean(fooled)),
        "success_rate_correct": _mean(fooled[correct_before]),
        "seconds": float(outcome.seconds) if np.isfinite(outcome.seconds) else None,
    }
    for name, mask in (("all", fooled), ("correct", fooled & correct_before)):
        norms = outcome.l2[mask]
        out[f"mean_l2_{name}"] = float(norms.mean()) if len(norms) else None
        out[f"median_l2_{name}"] = float(np.median(norms)) if len(norms) else None
    return out


def accuracy_under_budget(outcome: Outcome, budgets: np.ndarray) -> np.ndarray:
    """Figure 4's curve from a minimum-norm attack: the accuracy an attacker limited to an L2
    budget r achieves, i.e. examples correct before the attack whose adversarial needs more than r
    (or was not found)."""
    correct_before = outcome.clean_pred == outcome.labels
    broken = (outcome.adv_pred != outcome.labels) & correct_before
    needed = np.where(broken, outcome.l2, np.inf)
    return np.array([np.mean(correct_before & (needed > r)) for r in budgets])


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None
