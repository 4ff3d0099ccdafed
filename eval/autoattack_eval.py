"""AutoAttack in ``--mode eval`` (Croce & Hein 2020; attacks/autoattack.py): robust accuracy at the
radius, the accuracy after each of its attacks, the per-example worst case over every attack the
evaluation ran inside that ball, APGD-CE along a curve of radii for the masking checks, and the
RobustBench-style record of the result.

Per-example outcomes are cached in ``<run>/eval_cache/`` beside the other attacks', keyed by the
settings, the weights and the test subset (LoadedRun.cache_path).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from eval import cache
from eval.config import AUTOATTACK_FIXED
from eval.metrics import Outcome
from eval.progress import Progress
from eval.suite import LoadedRun, read_cached, write_cached, write_npz

# A fixed-budget attack at the radius returns ||delta|| = eps up to float32 rounding.
RADIUS_RTOL, RADIUS_ATOL = 1e-4, 1e-6


@dataclasses.dataclass(frozen=True)
class AutoAttackOutcome:
    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray        # the model's prediction at AutoAttack's worst case (x where none was found)
    flags: dict                 # {"clean", then each attack in order: bool [N], robust after that stage}
    meta: dict                  # seconds, forward passes, attacked, rejected, warnings, max perturbation
    x_adv: np.ndarray | None = None  # the worst case per example (x where none was found); not cached

    @property
    def robust(self) -> np.ndarray:
        return list(self.flags.values())[-1]


def threat_model(cfg) -> str:
    return "Linf" if cfg.autoattack_norm == "inf" else "L2"


def autoattack_outcome(target: LoadedRun, cfg) -> AutoAttackOutcome:
    """AutoAttack's per-example result on ``target``, from the cache when its key matches."""
    path = target.cache_path("autoattack", cfg.attack_settings("autoattack"))
    cached = cache.read(path, ("labels", "clean_pred", "adv_pred", "flags", "meta"))
    if cached is not None:
        meta = json.loads(str(cached["meta"]))
        flags = dict(zip(meta["stages"], cached["flags"].astype(bool)))
        return AutoAttackOutcome(cached["labels"], cached["clean_pred"], cached["adv_pred"], flags, meta)
    print(f"autoattack ({cfg.autoattack_version}: {','.join(cfg.autoattack_parts)}, {threat_model(cfg)} eps "
          f"{cfg.autoattack_radius:g}) on {target.run.name} ({len(target.y)} examples)")
    out = run_autoattack(target.model_fn, target.x, target.y, cfg, target.clean_predictions(cfg.batch_size),
                         lambda images: target.predict(images, cfg.batch_size))
    write_npz(path, dict(labels=out.labels, clean_pred=out.clean_pred, adv_pred=out.adv_pred,
                         flags=np.stack(list(out.flags.values())), meta=np.array(json.dumps(out.meta))))
    return out


def run_autoattack(model_fn, x, y, cfg, clean: np.ndarray, predict, verbose: bool = True) -> AutoAttackOutcome:
    """AutoAttack with ``cfg``'s settings on images ``x`` (labels ``y``, the model's predictions
    ``clean`` on them), with progress if ``verbose``; ``predict(images)`` gives the model's predictions."""
    from attacks.autoattack import autoattack

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = autoattack(model_fn, x, y, eps=cfg.autoattack_radius, norm=_norm(cfg),
                            version=cfg.autoattack_version,
                            attacks=cfg.autoattack_parts if cfg.autoattack_version == "custom" else None,
                            seed=cfg.autoattack_seed, batch_size=cfg.batch_size, attack_kwargs=_budgets(cfg),
                            verbose=verbose, progress=_progress() if verbose else None, clean_predictions=clean)
    meta = {**result.as_dict(), "stages": list(result.robust_flags), "warnings": [str(w.message) for w in caught]}
    return AutoAttackOutcome(labels=y, clean_pred=clean, adv_pred=predict(result.x_adv), flags=result.robust_flags,
                             meta=meta, x_adv=result.x_adv)


def _progress():
    """A progress callback for attacks.autoattack: one Progress per stage, over the examples it attacks."""
    current = {}

    def update(stage: str, done: int, total: int) -> None:
        if current.get("stage") != stage:
            current.update(stage=stage, bar=Progress(total, f"  {stage} on {total} examples still robust"))
        current["bar"].update(done)
    return update


STANDARD = AUTOATTACK_FIXED["standard"]


def completion_attacks(done) -> tuple[str, ...]:
    """The standard AutoAttack's attacks after ``done``, which must be its first ones, in order."""
    done = tuple(done)
    if not done or done != STANDARD[:len(done)]:
        raise ValueError(f"completing AutoAttack to its standard version needs the standard's first attacks in "
                         f"order ({', '.join(STANDARD)}; e.g. --autoattack_version custom --autoattack_attacks "
                         f"apgd-ce,apgd-t), got {', '.join(done) or 'none'}")
    return STANDARD[len(done):]


def standard_completion(target: LoadedRun, cfg, aa: AutoAttackOutcome, picks: np.ndarray) -> dict:
    """The standard AutoAttack's result on the test examples ``picks`` (indices into target.x),
    from ``aa``, a run of the standard version's first attacks (``--autoattack_version custom
    --autoattack_attacks apgd-ce,apgd-t``): the standard version's remaining attacks (FAB-T, then
    Square) run on the picked examples ``aa`` left robust, as the standard protocol runs each
    attack on what the ones before it left. The cheap stages on every test image, the costly ones
    on a subset. Cached beside ``aa`` (keyed by its settings and the picks).

    Returns {"n", "examples" (the picks), "attacks" (all of the standard version's), "flags" ({stage:
    robust after it, over the picks}), "accuracy" (the standard version's robust accuracy on the
    picks), "first_attacks_accuracy" (``aa``'s on the same picks), "found" ({later attack: examples
    it broke that ``aa``'s attacks had not}), "seconds", "warnings"}."""
    done = list(aa.flags)[1:]
    rest = completion_attacks(done)
    standard = tuple(done) + rest
    picks = np.asarray(picks, dtype=np.int64)
    key = {**cfg.attack_settings("autoattack"), "complete_with": list(rest),
           "picks": hashlib.sha1(picks.tobytes()).hexdigest()[:16]}
    path = target.cache_path("autoattack-standard", key)
    flags = {stage: f[picks] for stage, f in aa.flags.items()}
    cached = cache.read(path, ("flags", "meta"))
    if cached is not None:
        meta = json.loads(str(cached["meta"]))
        flags.update(zip(rest, cached["flags"].astype(bool)))
    else:
        meta = {"seconds": {}, "warnings": []}
        todo = picks[flags[done[-1]]]
        if rest and len(todo):
            from attacks.autoattack import autoattack

            print(f"autoattack standard: {', '.join(rest)} on the {len(todo)} of {len(picks)} picked examples "
                  f"{', '.join(done)} left robust ({target.run.name})")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = autoattack(target.model_fn, target.x[todo], target.y[todo], eps=cfg.autoattack_radius,
                                    norm=_norm(cfg), version="custom", attacks=rest, seed=cfg.autoattack_seed,
                                    batch_size=cfg.batch_size, attack_kwargs=_budgets(cfg, rest), verbose=True)
            meta = {"seconds": {k: v for k, v in result.seconds.items() if k != "clean"},
                    "warnings": [str(w.message) for w in caught]}
            robust = flags[done[-1]].copy()
            where = np.flatnonzero(robust)
            for stage in rest:
                robust = robust.copy()
                robust[where] &= result.robust_flags[stage]
                flags[stage] = robust
        else:
            for stage in rest:
                flags[stage] = flags[done[-1]].copy()
        write_npz(path, dict(flags=np.stack([flags[s] for s in rest]) if rest else np.zeros((0, len(picks)), bool),
                             meta=np.array(json.dumps(meta))))
    last = list(flags)[-1]
    found = {}
    for before, stage in zip(list(flags)[len(done):], rest):
        found[stage] = int(np.sum(flags[before] & ~flags[stage]))
    return {"n": int(len(picks)), "examples": picks.tolist(), "attacks": list(standard),
            "flags": {k: v.astype(bool).tolist() for k, v in flags.items()},
            "accuracy": float(np.mean(flags[last])), "first_attacks": done,
            "first_attacks_accuracy": float(np.mean(flags[done[-1]])),
            "found": found, "seconds": meta["seconds"], "warnings": meta["warnings"]}


def _norm(cfg):
    return np.inf if cfg.autoattack_norm == "inf" else 2


def _budgets(cfg, parts=None) -> dict:
    """--autoattack_iters and --autoattack_square_queries, for the attacks this version runs (or ``parts``)."""
    budgets = {}
    for part in cfg.autoattack_parts if parts is None else parts:
        budgets[part] = ({"n_queries": cfg.autoattack_square_queries} if part == "square"
                         else {"n_iter": cfg.autoattack_iters})
    return budgets


def curve(target: LoadedRun, cfg, aa: AutoAttackOutcome) -> list[dict]:
    """APGD-CE's robust accuracy at each --autoattack_curve multiple of the radius (and at 1: the
    AutoAttack's own first stage when it is APGD-CE), for the monotonicity check."""
    if not cfg.autoattack_curve:
        return []
    from attacks.apgd import apgd

    eps = cfg.autoattack_radius
    points = []
    for multiple in sorted(set(cfg.autoattack_curve) | {1.0}):
        stages = list(aa.flags)
        seconds = 0.0  # AutoAttack's own APGD-CE: its time is the AutoAttack's
        if multiple == 1.0 and len(stages) > 1 and stages[1] == "apgd-ce":
            accuracy = float(np.mean(aa.flags["apgd-ce"]))
        else:
            settings = {**cfg.attack_settings("autoattack"), "eps": eps * multiple, "attack": "apgd-ce"}
            path = target.cache_path("autoattack-curve", settings)
            result = read_cached(path)
            if result is None:
                result = _apgd_ce_outcome(apgd, target, cfg, eps * multiple)
                write_cached(path, result)
            accuracy = float(np.mean(result.robust))
            seconds = float(result.seconds) if np.isfinite(result.seconds) else None
        points.append({"eps_multiple": multiple, "eps": eps * multiple, "accuracy": accuracy, "seconds": seconds})
    return points


def _apgd_ce_outcome(apgd, target: LoadedRun, cfg, eps: float) -> Outcome:
    import time

    import tensorflow as tf

    started = time.perf_counter()
    clean = target.clean_predictions(cfg.batch_size)
    adv = clean.copy()
    rows = np.flatnonzero(clean == target.y)
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start:start + cfg.batch_size]
        x_adv = np.asarray(apgd(target.model_fn, tf.constant(target.x[chunk]), y=tf.constant(target.y[chunk]),
                                eps=eps, norm=_norm(cfg), n_iter=cfg.autoattack_iters, seed=cfg.autoattack_seed))
        adv[chunk] = target.predict(x_adv, cfg.batch_size)
    return Outcome(labels=target.y, clean_pred=clean, adv_pred=adv, l2=np.zeros(len(target.y), np.float32),
                   seconds=time.perf_counter() - started)


def broken_within(outcome: Outcome, eps: float) -> np.ndarray:
    """Examples the attack's own adversarial misclassifies with ||delta||_2 <= eps. For an L-inf
    radius this is sufficient (||delta||_inf <= ||delta||_2), so L2 attacks count only where valid."""
    return (outcome.adv_pred != outcome.labels) & (outcome.l2 <= eps * (1 + RADIUS_RTOL) + RADIUS_ATOL)


def summary(aa: AutoAttackOutcome, others: dict, cfg, curve_points: list[dict]) -> tuple[dict, np.ndarray]:
    """The run's AutoAttack record, and the per-example worst case. ``others``: {label: Outcome} of
    every other attack the evaluation ran on this run (white- and black-box); each counts in the
    worst case wherever its adversarial lies inside the ball."""
    eps = cfg.autoattack_radius
    within = {name: broken_within(o, eps) for name, o in others.items()}
    counted = [name for name, broken in within.items() if broken.any()]
    worst = aa.robust.copy()
    for broken in within.values():
        worst &= ~broken
    stages = list(aa.flags)
    gradient_broken = np.zeros(len(aa.labels), bool)
    for name, broken in within.items():
        gradient_broken |= broken
    record = {
        "version": cfg.autoattack_version, "attacks": stages[1:], "threat_model": threat_model(cfg), "eps": eps,
        "settings": cfg.attack_settings("autoattack"),
        "clean_accuracy": float(np.mean(aa.flags["clean"])), "robust_accuracy": float(np.mean(aa.robust)),
        "accuracy_after": {stage: float(np.mean(flags)) for stage, flags in aa.flags.items()},
        "seconds": aa.meta["seconds"], "forward_passes": aa.meta["forward_passes"],
        "attacked": aa.meta["attacked"], "rejected": aa.meta["rejected"],
        "max_perturbation": aa.meta["max_perturbation"], "warnings": aa.meta.get("warnings", []),
        "worst_case": {"accuracy": float(np.mean(worst)), "attacks_counted": ["autoattack"] + counted,
                       "found_beyond_autoattack": {name: int(np.sum(broken & aa.robust)) for name, broken in within.items()}},
        "curve": curve_points,
    }
    if "square" in stages:
        before = aa.flags[stages[stages.index("square") - 1]]
        by_square = before & ~aa.flags["square"]
        # Square's wins that no gradient attack of the evaluation (AutoAttack's before it included) found.
        record["square_only_fraction"] = float(np.mean(by_square & ~gradient_broken))
    if "apgd-ce" in stages and "apgd-t" in stages and stages.index("apgd-ce") < stages.index("apgd-t"):
        before = aa.flags[stages[stages.index("apgd-t") - 1]]
        record["apgd_t_gain"] = float(np.mean(before & ~aa.flags["apgd-t"]))
    return record, worst


def robustbench_record(run_name: str, architecture: str, dataset: str, n_examples: int, record: dict,
                       commit: str | None) -> dict:
    """The fields of RobustBench's model_info files (percentages as strings, as theirs), the ones
    this tool cannot know null; then this evaluation's own details."""
    return {
        "name": run_name, "architecture": architecture, "eps": f"{record['eps']:.6g}",
        "clean_acc": f"{100 * record['clean_accuracy']:.2f}", "autoattack_acc": f"{100 * record['robust_accuracy']:.2f}",
        "reported": None, "additional_data": False,
        "number_forward_passes": 1,  # RobustBench's meaning: passes per prediction (a deterministic model: 1)
        "dataset": dataset, "venue": None, "link": None, "footnote": None,
        "threat_model": record["threat_model"], "norm": record["threat_model"],
        "n_examples": int(n_examples), "autoattack_version": record["version"], "autoattack_attacks": record["attacks"],
        "autoattack_forward_passes": int(sum(record["forward_passes"].values())),
        "worst_case_acc": f"{100 * record['worst_case']['accuracy']:.2f}", "tool_commit": commit,
    }


def write_robustbench(eval_dir: Path, runs: dict, write_json) -> list[str]:
    """robustbench.json in the eval dir for one run, or in <eval_dir>/<run>/ for several."""
    paths = []
    for name, run in runs.items():
        if "robustbench" not in run:
            continue
        entry = run["robustbench"]
        folder = eval_dir if len(runs) == 1 else eval_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "robustbench.json", entry)
        paths.append(str(folder / "robustbench.json"))
    return paths
