"""Evaluate *your* Keras model: AutoAttack's robust accuracy and the paper's protocol, from Python.

    from eval import evaluate_model
    result = evaluate_model(model, x_test, y_test, eps=8 / 255, norm="inf")   # standard AutoAttack, L-inf
    print(result.clean_accuracy, result.robust_accuracy)
    x_adv, robust = result.adversarial["autoattack"], result.robust["autoattack"]

``model`` is any callable Keras model that maps images in [0, 1] ([N, H, W, C], float32) to logits
[N, K]; it needs no ``input_shape`` (a subclassed model works). One call is one threat model:
``norm`` and ``eps`` apply to every attack asked for. The attacks are this project's (``attacks/``:
the AutoAttack of Croce & Hein 2020, FGM, MIM and PGD, the paper's DeepFool and CW-L2), the same
code ``run.py --mode eval`` runs on a trained run, and with ``out_dir`` the same results.json and
robustbench.json are written. Every attack's adversarial images come back (as fra31/auto-attack's
run_standard_evaluation returns them): one float32 copy of x per attack, kept rather than put behind
a flag because x itself is already held in float32 (10,000 CIFAR-10 images: 123 MB a copy); give
fewer images a call if that does not fit.
"""
from __future__ import annotations

import dataclasses
import numbers
import time
from pathlib import Path

import numpy as np

from configs.settings import default_eps
from eval import autoattack_eval

API_ATTACKS = ("autoattack", "fgm", "mim", "pgd", "deepfool", "cw")
# The attacks that exist in each norm: FGM, MIM and PGD as CleverHans defines them in both, AutoAttack
# in both; DeepFool and CW are this project's L2 minimum-norm attacks.
NORM_ATTACKS = {"2": API_ATTACKS, "inf": ("autoattack", "fgm", "mim", "pgd")}
# One threat model per call: ``eps`` and ``norm`` set these, so they are not settings of the API.
RADIUS_SETTINGS = ("fgm_eps", "mim_eps", "pgd_eps", "autoattack_eps", "autoattack_norm")
# MIM's step at L-inf when none is given: CleverHans's default ratio (eps_iter 0.06 at eps 0.3).
MIM_LINF_STEP = 0.06 / 0.3


@dataclasses.dataclass
class EvaluationResult:
    """What ``evaluate_model`` measured on ``n`` test images in one threat model (``norm``, ``eps``).

    Summaries: ``clean_accuracy``; ``robust_accuracy`` (AutoAttack's, None when it was not asked
    for); ``autoattack`` (its full record: each stage's accuracy, seconds, forward passes, the
    worst case over every attack asked for); ``attacks`` ({attack: summary}: accuracy after it,
    success rates, mean and median L2); ``robustbench`` (RobustBench's model_info fields).
    Per example, for each attack asked for: ``adversarial[attack]`` (float32 images, x's shape:
    AutoAttack's worst case, x where it found none), ``robust[attack]`` (bool: correct before and
    after), ``l2[attack]`` (||x_adv - x||_2, the minimum-norm attacks' measure). For AutoAttack:
    ``autoattack_flags`` ({"clean", then each stage: robust after it}) and ``broken_by`` (the stage
    that broke each image: "clean" for one misclassified unattacked, "" for one still robust).
    ``clean_predictions``: the model's labels on x."""
    n: int
    norm: str
    eps: float
    clean_accuracy: float
    robust_accuracy: float | None
    autoattack: dict | None
    attacks: dict
    adversarial: dict
    robust: dict
    l2: dict
    clean_predictions: np.ndarray
    autoattack_flags: dict | None = None
    broken_by: np.ndarray | None = None
    robustbench: dict | None = None
    written: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        """The summaries, JSON-ready (no per-example arrays)."""
        keep = ("n", "norm", "eps", "clean_accuracy", "robust_accuracy", "autoattack", "attacks", "robustbench",
                "written")
        return {k: getattr(self, k) for k in keep}


def _check_request(eps, norm, attacks, batch_size, verbose, settings) -> tuple[str, float, tuple]:
    """(norm "2"/"inf", eps, attacks) of one threat model, or a ValueError naming the problem and the fix."""
    if norm not in (2, "2", np.inf, "inf"):
        raise ValueError(f"norm must be 2 or 'inf' (np.inf), got {norm!r}")
    norm = "inf" if norm in (np.inf, "inf") else "2"
    if isinstance(attacks, str):
        attacks = (attacks,)  # attacks="fgm" names one attack, not three letters
    attacks = tuple(attacks)
    unknown = [a for a in attacks if a not in API_ATTACKS]
    if unknown or not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks {list(attacks)}: choose distinct names from {', '.join(API_ATTACKS)}")
    wrong_norm = [a for a in attacks if a not in NORM_ATTACKS[norm]]
    if wrong_norm:
        raise ValueError(f"{', '.join(wrong_norm)} has no L-inf version here (DeepFool and CW-L2 are minimum-norm "
                         f"L2 attacks): with norm='inf' choose from {', '.join(NORM_ATTACKS['inf'])}, or evaluate "
                         f"{', '.join(wrong_norm)} in a second call with norm=2")
    mixed = [k for k in settings if k in RADIUS_SETTINGS]
    if mixed:
        raise ValueError(f"{mixed[0]} would give one attack its own threat model: evaluate_model measures one per "
                         "call, so eps= and norm= set every attack's (call it once per threat model)")
    if eps is None:
        eps = default_eps(norm)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a number > 0 (the radius, pixels in [0, 1]), got {eps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(verbose, bool) or verbose not in (0, 1):
        raise ValueError(f"verbose must be 0 (silent) or 1 (progress bars and the plan), got {verbose!r}")
    return norm, float(eps), attacks


def evaluate_model(model, x, y=None, *, eps: float | None = None, norm=2, attacks=("autoattack",),
                   version: str = "standard", batch_size: int = 128, seed: int = 0, verbose: int = 1,
                   out_dir=None, name: str = "model", **settings) -> EvaluationResult:
    """Robust accuracy of ``model`` on (``x``, ``y``) in one threat model, and each attack's adversarials.

    ``x``: images [N, H, W, C], float in [0, 1] or uint8 (read as value / 255), and ``y`` integer
    labels [N]; or ``x`` a tf.data.Dataset of (images, labels) batches and ``y`` None. ``norm`` (2
    or "inf") and ``eps`` (default 0.5 for L2, 8/255 for L-inf) are the threat model of every
    attack: ``autoattack`` (both norms), ``fgm``, ``mim``, ``pgd`` (both, as CleverHans's), and the
    L2 minimum-norm ``deepfool`` and ``cw`` (norm 2 only). ``attacks``: a name or a list of them.
    ``version``: AutoAttack's (standard, rand, or custom with ``autoattack_attacks=(...)``).
    ``verbose``: 1 prints the plan and progress bars, 0 prints nothing. ``settings``: any other
    setting of ``--mode eval`` by its flag name (``mim_iters=20``, ``autoattack_iters=50``, ...;
    docs/evaluation.md). ``out_dir``: also write results.json and robustbench.json there."""
    from data.user_arrays import as_float, images_and_labels
    from eval.config import EvalConfig
    from models.user_model import check_model
    from training.rundir import git_state, package_versions, write_json_atomic

    norm, eps, attacks = _check_request(eps, norm, attacks, batch_size, verbose, settings)
    x, y = images_and_labels(x, y, "x")
    x = as_float(x)
    classes = check_model(model, x[:batch_size], y)
    if norm == "inf" and "mim_eps_iter" not in settings:
        settings["mim_eps_iter"] = MIM_LINF_STEP * eps
    try:
        cfg = EvalConfig(run_dirs=("<python>",), attacks=attacks, batch_size=int(batch_size), autoattack_norm=norm,
                         autoattack_eps=eps, fgm_eps=eps, mim_eps=eps, pgd_eps=eps, autoattack_version=version,
                         autoattack_seed=seed, autoattack_curve=settings.pop("autoattack_curve", ()), **settings)
    except TypeError as err:
        raise ValueError(f"unknown setting: {err} (see docs/evaluation.md for the settings)") from None
    cfg.validate()
    if verbose:
        print(_plan(len(y), norm, eps, attacks, cfg), flush=True)
    out = _evaluate(model, x, y, norm, eps, attacks, cfg, name, bool(verbose))
    if out.autoattack is not None:
        params = f", {model.count_params():,} parameters" if hasattr(model, "count_params") else ""
        out.robustbench = autoattack_eval.robustbench_record(
            name, f"{type(model).__name__} {getattr(model, 'name', '')}{params}".strip(), f"arrays {x.shape[1:]}",
            out.n, out.autoattack, git_state()["commit"])
    if out_dir is not None:
        out.written = _write(Path(out_dir), name, out, cfg, classes, write_json_atomic, git_state()["commit"],
                             package_versions())
    return out


def _plan(n: int, norm: str, eps: float, attacks: tuple, cfg) -> str:
    parts = [f"autoattack ({cfg.autoattack_version}: {', '.join(cfg.autoattack_parts)})" if a == "autoattack" else a
             for a in attacks]
    return f"evaluate_model: {n} images, {autoattack_eval.threat_model(cfg)} eps {eps:g}: {', '.join(parts)}"


def _evaluate(model, x, y, norm, eps, attacks, cfg, name, verbose) -> EvaluationResult:
    """Every attack asked for, one threat model, per example and summarised (``--mode eval``'s code)."""
    import keras

    from eval.metrics import Outcome, summarize
    from eval.suite import craft_arrays

    def model_fn(images):
        return model(images, training=False)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        logits = tf.function(model_fn, reduce_retracing=True)
    else:  # JAX or PyTorch: AutoAttack through its keras.ops attacks (docs/backends.md)
        if set(attacks) - {"autoattack"}:
            raise ValueError(f"on Keras's {keras.backend.backend()} backend evaluate_model runs autoattack only, "
                             f"got {list(attacks)} (the paper's attacks are TensorFlow's; docs/backends.md)")
        if isinstance(model, keras.Model):  # JAX differentiates it through stateless_call, weights as arguments
            model_fn = model
        logits = model_fn
    batch = cfg.batch_size
    predict = lambda images: np.concatenate([np.argmax(np.asarray(logits(images[i:i + batch])), axis=-1)  # noqa: E731
                                             for i in range(0, len(images), batch)])
    clean = predict(x)
    attack_norm = np.inf if norm == "inf" else 2
    outcomes, adversarial = {}, {}
    for attack in [a for a in attacks if a != "autoattack"]:
        started = time.perf_counter()
        adversarial[attack] = craft_arrays(attack, model_fn, x, y, cfg, f"{attack} on {name} ({len(y)} examples)",
                                           norm=attack_norm, verbose=verbose).astype(np.float32, copy=False)
        outcomes[attack] = Outcome(labels=y, clean_pred=clean, adv_pred=predict(adversarial[attack]),
                                   l2=_l2(adversarial[attack], x), seconds=time.perf_counter() - started)
    robust = {a: o.robust for a, o in outcomes.items()}
    l2 = {a: o.l2 for a, o in outcomes.items()}
    record = flags = broken_by = None
    if "autoattack" in attacks:
        aa = _run_autoattack(model_fn, x, y, cfg, clean, predict, verbose)
        record, _ = autoattack_eval.summary(aa, outcomes, cfg, [])
        adversarial["autoattack"] = np.asarray(aa.x_adv, np.float32)
        robust["autoattack"], l2["autoattack"] = aa.robust, _l2(adversarial["autoattack"], x)
        flags, broken_by = aa.flags, _broken_by(aa.flags)
    return EvaluationResult(
        n=len(y), norm=norm, eps=eps, clean_accuracy=float(np.mean(clean == y)),
        robust_accuracy=None if record is None else float(record["robust_accuracy"]), autoattack=record,
        attacks={a: summarize(o) for a, o in outcomes.items()}, adversarial={a: adversarial[a] for a in attacks},
        robust={a: robust[a] for a in attacks}, l2={a: l2[a] for a in attacks}, clean_predictions=clean,
        autoattack_flags=flags, broken_by=broken_by)


def _run_autoattack(model_fn, x, y, cfg, clean, predict, verbose):
    """AutoAttack's per-example outcome: the one way evaluate_model runs it (``--mode eval``'s code)."""
    return autoattack_eval.run_autoattack(model_fn, x, y, cfg, clean, predict, verbose=verbose)


def _l2(x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x_adv - x) ** 2).reshape(len(x), -1).sum(axis=1)).astype(np.float32)


def _broken_by(flags: dict) -> np.ndarray:
    """Per example, the first stage after which it is no longer robust ("" if none)."""
    stages = list(flags)
    out = np.full(len(flags[stages[0]]), "", dtype=f"<U{max(len(s) for s in stages)}")
    for stage in reversed(stages):
        out[~flags[stage]] = stage
    return out


def _write(out_dir: Path, name: str, result: EvaluationResult, cfg, classes: int, write_json, commit,
           versions) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    run = {"benign_accuracy": result.clean_accuracy, "attacks": {a: {"white": s} for a, s in result.attacks.items()}}
    if result.autoattack is not None:
        run["autoattack"], run["robustbench"] = result.autoattack, result.robustbench
    results = {"protocol": {"source": "eval.evaluate_model (Python API)", "n": result.n, "classes": classes,
                            "norm": result.norm, "eps": result.eps, "attacks": list(cfg.attacks),
                            "settings": {a: cfg.attack_settings(a) for a in cfg.attacks},
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tool_commit": commit,
                            "versions": versions},
               "runs": {name: run}}
    written = autoattack_eval.write_robustbench(out_dir, results["runs"], write_json)
    write_json(out_dir / "results.json", results)
    return [str(out_dir / "results.json")] + written
