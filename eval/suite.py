"""Runs the evaluation attacks over a test set in batches, and caches per-example outcomes.

An outcome is cached in ``<run>/eval_cache/`` under a key made of the attack, its settings, the
evaluated weights (and the source's, for black-box), the dataset and the test subset: a second
evaluation of the same run computes only what is new, and retrained weights are never mistaken
for old ones.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import attacks
from eval import cache
from eval.metrics import Outcome
from eval.progress import Progress

CACHE_DIR = "eval_cache"


class LoadedRun:
    """A trained run with its float32 EMA classifier and the evaluation's test examples."""

    def __init__(self, run, x_test: np.ndarray, y_test: np.ndarray, dataset_name: str, test_limit: int):
        self.run = run
        self.model = run.build_classifier()
        self.fingerprint = run.fingerprint()
        self.x, self.y = x_test, y_test
        self.dataset_name, self.test_limit = dataset_name, test_limit
        model = self.model
        # One model_fn per model: the compiled attacks trace once per model_fn.
        self.model_fn = lambda images: model(images, training=False)
        self._logits = tf.function(self.model_fn, reduce_retracing=True)
        self._clean, self.clean_passes = None, 0

    def predict(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        return np.concatenate([np.argmax(self._logits(images[i:i + batch_size]).numpy(), axis=-1)
                               for i in range(0, len(images), batch_size)])

    def clean_predictions(self, batch_size: int) -> np.ndarray:
        """The model's predictions on the test images, computed once per evaluation and shared by
        every attack, the masking checks and AutoAttack (a copy: callers may not change the memo)."""
        if self._clean is None:
            self._clean = self.predict(self.x, batch_size)
            self.clean_passes += 1
        return self._clean.copy()

    def cache_path(self, attack: str, settings: dict, source=None) -> Path:
        """Where the outcome of ``attack`` on these weights (crafted on ``source``'s, if given) is cached."""
        box = "black" if source else "white"
        return self._path(f"{attack}-{box}", attack, settings, source.fingerprint if source else None)

    def crafted_path(self, attack: str, settings: dict) -> Path:
        """Where the adversarials ``attack`` crafted on these weights are cached (a black-box source's)."""
        return self._path(f"{attack}-crafted", attack, settings, None)

    def _path(self, prefix: str, attack: str, settings: dict, source_fingerprint) -> Path:
        key = {"attack": attack, "settings": settings, "weights": self.fingerprint,
               "source": source_fingerprint, "dataset": self.dataset_name,
               "test_limit": self.test_limit, "n": int(len(self.y))}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.run.run_dir / CACHE_DIR / f"{prefix}-{digest}.npz"


def craft(attack: str, target: LoadedRun, cfg, progress_label: str) -> np.ndarray:
    """Adversarial examples for target's test set, in batches of cfg.batch_size, with progress."""
    return craft_arrays(attack, target.model_fn, target.x, target.y, cfg, progress_label)


def craft_arrays(attack: str, model_fn, x: np.ndarray, y: np.ndarray, cfg, progress_label: str, norm=2,
                 verbose: bool = True) -> np.ndarray:
    """Adversarial examples of ``attack`` (cfg's settings) for images ``x``, labels ``y``; ``norm``:
    FGM's, MIM's and PGD's (--mode eval's L2, or np.inf from eval.evaluate_model)."""
    fn = _attack_fn(attack, model_fn, cfg, norm)
    progress = Progress(len(y), progress_label) if verbose else None
    out = []
    for start in range(0, len(y), cfg.batch_size):
        xb, yb = x[start:start + cfg.batch_size], y[start:start + cfg.batch_size]
        out.append(np.asarray(fn(tf.constant(xb), tf.constant(yb))))
        if progress is not None:
            progress.update(min(start + cfg.batch_size, len(y)))
    return np.concatenate(out)


def _attack_fn(attack: str, model_fn, cfg, norm=2):
    """attack name -> f(x, y) -> x_adv, with the evaluation's settings (L2 unless ``norm`` says, box [0, 1])."""
    box = dict(clip_min=0.0, clip_max=1.0)
    if norm != 2 and attack not in ("fgm", "mim", "pgd"):
        raise ValueError(f"{attack} is an L2 attack here: it has no norm {norm}")
    if attack in ("fgm", "mim") and cfg.attack_engine == "cleverhans":
        return _cleverhans_fn(attack, model_fn, cfg, norm)
    if attack == "fgm":
        return lambda x, y: attacks.fast_gradient_method(model_fn, x, cfg.fgm_eps, norm, y=y, **box)
    if attack == "mim":
        return lambda x, y: attacks.momentum_iterative_method(
            model_fn, x, eps=cfg.mim_eps, eps_iter=min(cfg.mim_eps_iter, cfg.mim_eps), nb_iter=cfg.mim_iters,
            norm=norm, y=y, **box)
    if attack == "deepfool":
        return lambda x, y: attacks.deepfool(model_fn, x, nb_candidate=cfg.deepfool_candidates,
                                             overshoot=cfg.deepfool_overshoot, max_iter=cfg.deepfool_iters, **box)
    if attack == "cw":
        return lambda x, y: attacks.carlini_wagner_l2(
            model_fn, x, y=y, batch_size=cfg.batch_size, binary_search_steps=cfg.cw_binary_steps,
            max_iterations=cfg.cw_iters, abort_early=True, confidence=0.0,
            initial_const=cfg.cw_initial_const, learning_rate=cfg.cw_lr, **box)
    if attack == "pgd":
        step = min(cfg.pgd_eps, 2.5 * cfg.pgd_eps / cfg.pgd_iters)
        return lambda x, y: attacks.projected_gradient_descent(
            model_fn, x, cfg.pgd_eps, step, cfg.pgd_iters, norm, y=y, rand_init=True, **box)
    if attack == "masking":
        step = min(cfg.masking_eps, 2.5 * cfg.masking_eps / cfg.masking_iters)  # Madry et al.'s 2.5 eps/steps
        return lambda x, y: attacks.projected_gradient_descent(
            model_fn, x, cfg.masking_eps, step, cfg.masking_iters, 2, y=y, rand_init=False, **box)
    raise ValueError(f"unknown attack '{attack}'")


def _cleverhans_fn(attack: str, model_fn, cfg, norm=2):
    """FGM / MIM from cleverhans.tf2.attacks itself (4.0.0 works under Keras 3 for these; its
    eager Python loop makes MIM slower than the compiled one). Same settings as the compiled."""
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
    from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method

    box = dict(clip_min=0.0, clip_max=1.0)
    if attack == "fgm":
        return lambda x, y: fast_gradient_method(model_fn, x, cfg.fgm_eps, norm, y=y, **box)
    return lambda x, y: momentum_iterative_method(
        model_fn, x, eps=cfg.mim_eps, eps_iter=min(cfg.mim_eps_iter, cfg.mim_eps), nb_iter=cfg.mim_iters, norm=norm,
        y=y, **box)


def read_cached(path: Path) -> Outcome | None:
    """The cached outcome, or None: none cached, or a damaged entry (one line; it is recomputed)."""
    cached = cache.read(path, ("labels", "clean_pred", "adv_pred", "l2"))
    if cached is None:
        return None
    seconds = float(cached["seconds"]) if "seconds" in cached else float("nan")
    return Outcome(**{k: cached[k] for k in ("labels", "clean_pred", "adv_pred", "l2")}, seconds=seconds)


def write_cached(path: Path, result: Outcome) -> None:
    write_npz(path, result.arrays())


def write_npz(path: Path, arrays: dict) -> None:
    """An attack's outcome written whole or not at all, safe beside other writers (eval/cache.py)."""
    cache.write(path, arrays)


def remove_partial_writes(folder: Path) -> None:
    """The temporary files this process, stopped mid-write, left in a cache folder (never another's)."""
    cache.remove_partial_writes(folder)


def _source_adversarials(attack: str, source: LoadedRun, cfg, crafted: dict | None) -> tuple[np.ndarray, float]:
    """A black-box source's adversarials and the seconds crafting them took: from this report's
    memo, else from the source's cache, else crafted (and cached in both)."""
    memo_key = (attack, source.fingerprint)
    if crafted is not None and memo_key in crafted:
        return crafted[memo_key]
    path = source.crafted_path(attack, cfg.attack_settings(attack))
    cached = cache.read(path, ("x_adv", "seconds"))
    if cached is not None:
        found = cached["x_adv"], float(cached["seconds"])
    else:
        started = time.perf_counter()
        x_adv = craft(attack, source, cfg, f"{attack} on {source.run.name} ({len(source.y)} examples)")
        found = x_adv, time.perf_counter() - started
        write_npz(path, {"x_adv": found[0], "seconds": np.float64(found[1])})
    if crafted is not None:
        crafted[memo_key] = found
    return found


def outcome(attack: str, target: LoadedRun, cfg, source: LoadedRun | None = None,
            crafted: dict | None = None) -> Outcome:
    """The attack's per-example outcome on ``target``: crafted on ``target`` (white-box) or on
    ``source`` and transferred (black-box). ``crafted`` memoises the source's adversarials within one
    report, and its cache keeps them for the next."""
    settings = cfg.attack_settings(attack)
    path = target.cache_path(attack, settings, source)
    cached = read_cached(path)
    if cached is not None:
        print(f"{attack} on {target.run.name}{' from ' + source.run.name if source else ''}: from the cache "
              f"({path.name})")
        return cached
    attacker = source or target
    # Only a black-box source's adversarials serve other targets; a target's own outcome is written
    # to its cache below, so keeping its adversarials too (every table run's, in a report) buys nothing.
    if source is not None:
        x_adv, seconds = _source_adversarials(attack, source, cfg, crafted)
    else:
        started = time.perf_counter()
        x_adv = craft(attack, target, cfg, f"{attack} on {target.run.name} ({len(target.y)} examples)")
        seconds = time.perf_counter() - started
    result = Outcome(
        labels=target.y, clean_pred=target.clean_predictions(cfg.batch_size),
        adv_pred=target.predict(x_adv, cfg.batch_size),
        l2=np.sqrt(((x_adv - attacker.x) ** 2).reshape(len(x_adv), -1).sum(axis=1)).astype(np.float32),
        seconds=seconds)
    write_cached(path, result)
    return result


def zero_gradient_fraction(target: LoadedRun, batch_size: int) -> float:
    """Fraction of test examples whose cross-entropy input gradient is exactly zero (float32)."""
    @tf.function(reduce_retracing=True)
    def norms(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = attacks.cross_entropy_loss(labels=y, logits=target.model_fn(x))
        return attacks.l2_norm(tape.gradient(loss, x))
    values = np.concatenate([norms(tf.constant(target.x[i:i + batch_size]), tf.constant(target.y[i:i + batch_size])).numpy()
                             for i in range(0, len(target.y), batch_size)])
    return float(np.mean(values == 0.0))
