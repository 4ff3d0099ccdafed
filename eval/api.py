"""Evaluate *your* Keras model: AutoAttack's robust accuracy and the paper's protocol, from Python.

    from eval import evaluate_model
    result = evaluate_model(model, x_test, y_test, eps=0.5, norm=2)   # standard AutoAttack, L2 0.5
    print(result.clean_accuracy, result.robust_accuracy)

``model`` is any callable Keras model that maps images in [0, 1] ([N, H, W, C], float32) to logits
[N, K]; it needs no ``input_shape`` (a subclassed model works). The attacks are this project's
(``attacks/``: the AutoAttack of Croce & Hein 2020, the paper's FGM, MIM, DeepFool and CW-L2, all
L2 by default), the same code ``run.py --mode eval`` runs on a trained run, and with ``out_dir``
the same results.json and robustbench.json are written.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

PAPER_ATTACKS = ("fgm", "mim", "deepfool", "cw")
API_ATTACKS = ("autoattack",) + PAPER_ATTACKS


@dataclasses.dataclass
class EvaluationResult:
    """What ``evaluate_model`` measured on ``n`` test images.

    ``robust_accuracy``: AutoAttack's (None when it was not asked for); ``autoattack``: its full
    record (each stage's accuracy, seconds, forward passes); ``attacks``: per attack of the paper's
    protocol, its summary (accuracy after the attack, success rates, mean and median L2)."""
    n: int
    clean_accuracy: float
    robust_accuracy: float | None
    autoattack: dict | None
    attacks: dict
    written: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_inputs(model, x, y, eps, norm, attacks, batch_size):
    """Arrays from the arguments, or a ValueError that names the problem and the fix."""
    unknown = [a for a in attacks if a not in API_ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"attacks {list(attacks)} : choose from {', '.join(API_ATTACKS)}")
    if norm not in (2, "2", np.inf, "inf"):
        raise ValueError(f"norm must be 2 or 'inf', got {norm!r}")
    if eps is not None and not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"x must be images [N, H, W, C], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be float images in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0 or not np.isfinite([low, high]).all():
        raise ValueError(f"x must lie in [0, 1], got values from {low:g} to {high:g} (unnormalised? the threat "
                         "model is in pixel units: normalise inside the model)")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        hint = " (one-hot? give y.argmax(-1))" if y.ndim == 2 else ""
        raise ValueError(f"y must be integer labels of shape [N], got shape {y.shape} dtype {y.dtype}{hint}")
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    logits = np.asarray(model(x[:batch_size], training=False), np.float32)
    if logits.ndim != 2 or logits.shape[0] != len(x[:batch_size]) or logits.shape[1] < 2:
        raise ValueError(f"the model must return logits [N, K] with K >= 2 classes, got shape {logits.shape}")
    if np.all(logits >= 0) and np.allclose(logits.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("the model returns probabilities (non-negative outputs that sum to 1): give it logits, "
                         "e.g. without its final softmax (attacks on probabilities underestimate robustness)")
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}] (the model has {logits.shape[1]} classes), "
                         f"got {int(y.min())} to {int(y.max())}")
    return x.astype(np.float32, copy=False), y.astype(np.int64), int(logits.shape[1])


def evaluate_model(model, x, y, *, eps: float | None = None, norm=2, attacks=("autoattack",),
                   version: str = "standard", batch_size: int = 128, seed: int = 0, out_dir=None,
                   name: str = "model", **settings) -> EvaluationResult:
    """Robust accuracy of ``model`` on (``x``, ``y``) under AutoAttack and/or the paper's attacks.

    ``eps``: AutoAttack's radius (default 0.5 for L2, 8/255 for L-inf); ``attacks``: any of
    ``autoattack``, ``fgm``, ``mim``, ``deepfool``, ``cw``; ``version``: AutoAttack's (standard,
    rand, or custom with ``autoattack_attacks=(...)``); ``settings``: any other setting of
    ``--mode eval`` by its flag name (``mim_iters=20``, ``autoattack_iters=50``, ...; see
    docs/evaluation.md). ``out_dir``: also write results.json and robustbench.json there."""
    from eval import autoattack_eval
    from eval.config import EvalConfig
    from eval.metrics import Outcome, summarize
    from eval.suite import craft_arrays
    from training.rundir import git_state, package_versions, write_json_atomic

    x, y, classes = _check_inputs(model, x, y, eps, norm, tuple(attacks), batch_size)
    norm_name = "inf" if norm in (np.inf, "inf") else "2"
    try:
        cfg = EvalConfig(run_dirs=("<python>",), attacks=tuple(attacks), batch_size=batch_size,
                         autoattack_norm=norm_name, autoattack_eps=eps, autoattack_version=version,
                         autoattack_seed=seed, autoattack_curve=settings.pop("autoattack_curve", ()), **settings)
    except TypeError as err:
        raise ValueError(f"unknown setting: {err} (see docs/evaluation.md for the settings)") from None
    cfg.validate()

    import tensorflow as tf

    def model_fn(images):
        return model(images, training=False)

    logits = tf.function(model_fn, reduce_retracing=True)
    predict = lambda images: np.concatenate([np.argmax(logits(images[i:i + batch_size]).numpy(), axis=-1)  # noqa: E731
                                             for i in range(0, len(images), batch_size)])
    clean = predict(x)
    outcomes, summaries = {}, {}
    for attack in [a for a in attacks if a in PAPER_ATTACKS]:
        started = time.perf_counter()
        x_adv = craft_arrays(attack, model_fn, x, y, cfg, f"{attack} on {name} ({len(y)} examples)")
        outcomes[attack] = Outcome(labels=y, clean_pred=clean, adv_pred=predict(x_adv),
                                   l2=np.sqrt(((x_adv - x) ** 2).reshape(len(x), -1).sum(axis=1)).astype(np.float32),
                                   seconds=time.perf_counter() - started)
        summaries[attack] = summarize(outcomes[attack])
    record = None
    if "autoattack" in attacks:
        aa = autoattack_eval.run_autoattack(model_fn, x, y, cfg, clean, predict)
        record, _ = autoattack_eval.summary(aa, outcomes, cfg, [])
    out = EvaluationResult(n=len(y), clean_accuracy=float(np.mean(clean == y)),
                           robust_accuracy=None if record is None else float(record["robust_accuracy"]),
                           autoattack=record, attacks=summaries)
    if out_dir is not None:
        out.written = _write(Path(out_dir), name, model, out, cfg, classes, x.shape[1:], write_json_atomic,
                             git_state()["commit"], package_versions())
    return out


def _write(out_dir: Path, name: str, model, result: EvaluationResult, cfg, classes: int, shape, write_json,
           commit, versions) -> list[str]:
    from eval import autoattack_eval

    out_dir.mkdir(parents=True, exist_ok=True)
    run = {"benign_accuracy": result.clean_accuracy, "attacks": {a: {"white": s} for a, s in result.attacks.items()}}
    if result.autoattack is not None:
        run["autoattack"] = result.autoattack
        params = f", {model.count_params():,} parameters" if hasattr(model, "count_params") else ""
        run["robustbench"] = autoattack_eval.robustbench_record(
            name, f"{type(model).__name__} {getattr(model, 'name', '')}{params}".strip(), f"arrays {tuple(shape)}",
            result.n, result.autoattack, commit)
    results = {"protocol": {"source": "eval.evaluate_model (Python API)", "n": result.n, "classes": classes,
                            "attacks": list(cfg.attacks),
                            "settings": {a: cfg.attack_settings(a) for a in cfg.attacks},
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tool_commit": commit,
                            "versions": versions},
               "runs": {name: run}}
    written = autoattack_eval.write_robustbench(out_dir, results["runs"], write_json)
    write_json(out_dir / "results.json", results)
    return [str(out_dir / "results.json")] + written
