"""``run.py --mode eval``: the paper's protocol (sections 4.2-4.4) on one or more trained runs.

For each run, on the same test examples: benign accuracy; white-box FGM and MIM accuracy;
DeepFool and CW-L2 success and L2 statistics; the same attacks crafted on ``--source_run`` and
transferred (black-box); accuracy against the L2 budget; gradient-masking checks; optionally PGN
as an attack (Figure 3). Writes results.json, results.md and PNG plots to the eval directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

import data
from eval import autoattack_eval, evaluate_results, masking, outputs
from eval.config import ATTACKS, MIN_NORM_ATTACKS, EvalConfig
from eval.metrics import accuracy_under_budget, summarize
from eval.pgn_attack import figure3_points
from eval.runs import load_run
from eval.progress import duration, stoppable
from eval.suite import CACHE_DIR, LoadedRun, outcome, remove_partial_writes, zero_gradient_fraction
from training import writes
from training.lock import hold as hold_lock
from training.rundir import RunDirError, git_state, package_versions, write_json_atomic


def evaluate(cfg: EvalConfig, say=print) -> dict:
    cfg.validate()
    runs = [load_run(d) for d in cfg.run_dirs]
    source = load_run(cfg.source_run) if cfg.source_run else None
    reference = runs[0].config["dataset"]
    for other in runs[1:] + ([source] if source else []):
        if _dataset_key(other.config["dataset"]) != _dataset_key(reference):
            role = "--source_run" if other is source else "--run_dir"
            raise RunDirError(f"{role} {other.run_dir} was trained on {other.config['dataset']['name']}, "
                              f"not {reference['name']} like {runs[0].run_dir}: attacks must share one test set")
    eval_dir = Path(cfg.eval_dir or runs[0].run_dir / "eval")
    # Before any data is read or attack run: a folder that cannot be written fails now, in one line.
    inputs = _inputs(cfg, runs)
    set_aside = outputs.prepare(eval_dir, "--eval_dir", "results.json", inputs, ("results.json", "results.md"))
    for run in runs + ([source] if source else []):  # each run's attack cache is written as attacks finish
        outputs.check_writable(run.run_dir / CACHE_DIR, f"the attack cache of {run.run_dir}:")
    with contextlib.ExitStack() as held:
        held.enter_context(hold_lock(eval_dir, f"--eval_dir {eval_dir}", _LOCKED_FIX))

        def cleanup():  # what a hard stop leaves half-written
            for run in runs + ([source] if source else []):
                remove_partial_writes(run.run_dir / CACHE_DIR)
            writes.remove(eval_dir.glob("*.tmp"))

        held.enter_context(stoppable(cleanup))
        return _evaluate(cfg, say, runs, source, reference, eval_dir, inputs, set_aside, held)


_LOCKED_FIX = "wait for that evaluation to finish, or give another --eval_dir"


def _evaluate(cfg, say, runs, source, reference, eval_dir, inputs, set_aside, held) -> dict:
    data_cfg = runs[0].data_config(cfg.test_limit, cfg.cache_dir)
    if "pgn" in cfg.attacks:
        data_cfg = dataclasses.replace(data_cfg, train_limit=min(cfg.pgn_train_limit, reference["train_size"]))
    dataset = data.load_dataset(data_cfg)
    x_test = dataset.test_images.astype(np.float32) / 255.0
    y_test = dataset.test_labels

    def loaded(run):
        return LoadedRun(run, x_test, y_test, dataset.name, cfg.test_limit)

    commit = git_state()["commit"]

    targets = [loaded(run) for run in runs]
    attacker = loaded(source) if source else None
    moved_to = set_aside()
    if moved_to:  # the lock went with the old folder: take the new one's
        held.enter_context(hold_lock(eval_dir, f"--eval_dir {eval_dir}", _LOCKED_FIX))
        say(f"{eval_dir} held an evaluation of other runs or settings: moved it to {moved_to}")
    eval_dir.mkdir(parents=True, exist_ok=True)
    say(_plan_line(cfg, targets, attacker))
    results = {"protocol": {**_protocol(cfg, dataset, len(y_test)), "inputs": inputs, "tool_commit": commit,
                            # Per example, in the order of every per_example list: its id and label.
                            "example_ids": dataset.test_ids.tolist(), "labels": y_test.tolist()}, "runs": {}}
    crafted: dict = {}
    min_norm_outcomes: dict = {a: {} for a in MIN_NORM_ATTACKS}
    plots = []
    for target in targets:
        say(f"evaluating {target.run.run_dir}")
        run_result = evaluate_target(target, cfg, attacker, crafted)
        if "autoattack" in run_result:
            run_result["robustbench"] = autoattack_eval.robustbench_record(
                target.run.name, _architecture(target), dataset.name, len(y_test), run_result["autoattack"], commit)
        for attack in MIN_NORM_ATTACKS:
            if attack in run_result["attacks"]:
                min_norm_outcomes[attack][target.run.name] = outcome(attack, target, cfg, crafted=crafted)
        if "pgn" in cfg.attacks:
            points = figure3_points(target, dataset.train_images, dataset.train_labels, cfg, say)
            run_result["figure3"] = points
            plots.append(evaluate_results.plot_figure3(target.run.name, points, results["protocol"], eval_dir))
        results["runs"][target.run.name] = run_result
    for attack, outcomes in min_norm_outcomes.items():
        if outcomes:
            budgets = evaluate_results.budget_grid(outcomes.values())
            for name, result in outcomes.items():
                results["runs"][name].setdefault("budget_curves", {})[attack] = {
                    "budgets": budgets.tolist(), "accuracy": accuracy_under_budget(result, budgets).tolist()}
    plots += evaluate_results.plot_budget_curves(results, eval_dir)
    results["plots"] = plots
    written = autoattack_eval.write_robustbench(eval_dir, results["runs"], write_json_atomic)
    write_json_atomic(eval_dir / "results.json", results)
    writes.atomic_write_text(eval_dir / "results.md", evaluate_results.results_markdown(results), "results.md")
    say(f"wrote {eval_dir / 'results.md'}, results.json, {len(plots)} plot(s)"
        + (f" and {', '.join(written)}" if written else ""))
    return results


def evaluate_target(target: LoadedRun, cfg: EvalConfig, attacker: LoadedRun | None = None,
                    crafted: dict | None = None) -> dict:
    """One run's row of the evaluation: benign accuracy, each attack white-box (and black-box from
    ``attacker``), and the gradient-masking checks. Cached outcomes are reused."""
    run_result = {"run_dir": str(target.run.run_dir), "epoch": target.run.epoch, "defense": target.run.defense,
                  "weights": target.fingerprint,
                  "benign_accuracy": float(np.mean(target.clean_predictions(cfg.batch_size) == target.y)),
                  "seconds_per_epoch": target.run.seconds_per_epoch(), "attacks": {}}
    outcomes = {}
    for attack in [a for a in cfg.attacks if a not in ("pgn", "autoattack")]:
        outcomes[attack] = outcome(attack, target, cfg, crafted=crafted)
        run_result["attacks"][attack] = {"white": summarize(outcomes[attack])}
        if attacker is not None and attacker.fingerprint != target.fingerprint:
            outcomes[f"{attack} (black-box)"] = outcome(attack, target, cfg, source=attacker, crafted=crafted)
            run_result["attacks"][attack]["black"] = summarize(outcomes[f"{attack} (black-box)"])
    outcomes["masking-pgd"] = outcome("masking", target, cfg, crafted=crafted)
    run_result["masking_pgd"] = summarize(outcomes["masking-pgd"])
    per_example = {"clean": target.clean_predictions(cfg.batch_size) == target.y}
    per_example.update({name: o.robust for name, o in outcomes.items()})
    if "autoattack" in cfg.attacks:
        aa = autoattack_eval.autoattack_outcome(target, cfg)
        points = autoattack_eval.curve(target, cfg, aa)
        run_result["autoattack"], per_example["worst_case"] = autoattack_eval.summary(aa, outcomes, cfg, points)
        per_example.update({f"autoattack/{stage}": flags for stage, flags in list(aa.flags.items())[1:]})
        per_example["autoattack"] = aa.robust
    # Per test example (the order of protocol.example_ids): correct (clean) / robust (each attack).
    run_result["per_example"] = {name: flags.astype(bool).tolist() for name, flags in per_example.items()}
    run_result["zero_gradient_fraction"] = zero_gradient_fraction(target, cfg.batch_size)
    run_result["masking_checks"] = masking.run_checks(run_result, cfg)
    run_result["masking_note"] = masking.low_accuracy_note(run_result["benign_accuracy"],
                                                           int(target.run.config["dataset"]["num_classes"]))
    return run_result


def _architecture(target) -> str:
    width = target.run.settings["train.width"]
    return f"PGN Table 1 CNN (models/classifier.py), width {width:g}, {target.model.count_params():,} parameters"


def _inputs(cfg: EvalConfig, runs: list) -> dict:
    """What an evaluation was made from: an earlier one in the same --eval_dir with other inputs is
    moved aside; with the same inputs it is rewritten in place (its plots have the same names)."""
    return {"runs": [str(run.run_dir) for run in runs], "source_run": cfg.source_run,
            "test_limit": cfg.test_limit, "attacks": list(cfg.attacks),
            "settings": {a: cfg.attack_settings(a) for a in (*ATTACKS, "masking")}}


def _dataset_key(info: dict) -> tuple:
    return info["name"], tuple(info["image_shape"]), info["num_classes"]


def _protocol(cfg: EvalConfig, dataset, n: int) -> dict:
    settings = {a: cfg.attack_settings(a) for a in ("fgm", "mim", "pgd", "deepfool", "cw", "autoattack", "masking")}
    # Only the attacks this evaluation ran (pgn's FGM / PGD points carry their own eps in figure3).
    parts = {
        "fgm": f"FGM L2 eps {cfg.fgm_eps:g}",
        "mim": f"MIM L2 eps {cfg.mim_eps:g}, {cfg.mim_iters} iterations, step {cfg.mim_eps_iter:g}",
        "pgd": f"PGD L2 eps {cfg.pgd_eps:g}, {cfg.pgd_iters} iterations, random start",
        "deepfool": f"DeepFool {cfg.deepfool_iters} iterations, overshoot {cfg.deepfool_overshoot:g}, "
                    f"{cfg.deepfool_candidates} candidates",
        "cw": f"CW-L2 {cfg.cw_iters} iterations x {cfg.cw_binary_steps} binary-search steps, lr {cfg.cw_lr:g}, "
              f"initial c {cfg.cw_initial_const:g}, confidence 0",
        "autoattack": f"AutoAttack {cfg.autoattack_version} ({', '.join(cfg.autoattack_parts)}), "
                      f"{autoattack_eval.threat_model(cfg)} eps {cfg.autoattack_radius:g}, {cfg.autoattack_iters} "
                      f"iterations (APGD, FAB), Square {cfg.autoattack_square_queries} queries, seed "
                      f"{cfg.autoattack_seed}",
    }
    line = "; ".join(parts[a] for a in cfg.attacks if a in parts) or "-"
    return {"dataset": dataset.name, "dataset_source": dataset.source, "n": n, "test_limit": cfg.test_limit,
            "source_run": cfg.source_run, "attacks": list(cfg.attacks), "settings": settings,
            "attack_engine": cfg.attack_engine, "eval_preset": cfg.eval_preset,
            "settings_line": line, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()}, "versions": package_versions()}


def _plan_line(cfg: EvalConfig, targets: list, attacker) -> str:
    """One line before any attack: what the evaluation will do and, from one timed gradient batch,
    about how long it takes at most (attacks that stop early, and cached outcomes, take less)."""
    n = len(targets[0].y)
    names = [a for a in cfg.attacks] + ["masking checks"]
    passes = 0.0
    for target in targets:
        passes += sum(_gradient_passes(a, cfg, target, n) for a in (*cfg.attacks, "masking") if not _cached(a, target, cfg))
    if attacker is not None:
        passes += sum(_gradient_passes(a, cfg, attacker, n) for a in cfg.attacks if a in ATTACKS and
                      a not in ("pgn", "autoattack"))
    seconds = passes * math.ceil(n / cfg.batch_size) * _seconds_per_gradient_batch(targets[0], cfg.batch_size)
    hint = "" if seconds < 1800 else "; --test_limit or --eval_preset quick for a first look"
    return (f"evaluating {len(targets)} run(s) on {n} test images with {', '.join(names)}"
            + (f" (black-box from {attacker.run.name})" if attacker else "")
            + f": at most about {duration(seconds)} on this machine, from a timed gradient batch{hint}")


def _cached(attack: str, target: LoadedRun, cfg: EvalConfig) -> bool:
    if attack == "pgn":
        return False
    return target.cache_path(attack, cfg.attack_settings(attack)).exists()


def _gradient_passes(attack: str, cfg: EvalConfig, target: LoadedRun, n: int) -> float:
    """Gradient evaluations per batch that ``attack`` makes at most (a forward pass counts a third)."""
    classes = int(target.run.config["dataset"]["num_classes"])
    targets = min(9, classes - 1)
    if attack == "autoattack":
        per_part = {"apgd-ce": cfg.autoattack_iters, "apgd-dlr": cfg.autoattack_iters,
                    "apgd-t": cfg.autoattack_iters * targets, "fab-t": cfg.autoattack_iters * targets,
                    "fab": cfg.autoattack_iters, "square": cfg.autoattack_square_queries / 3}
        return sum(per_part.get(p, cfg.autoattack_iters) for p in cfg.autoattack_parts) + \
            cfg.autoattack_iters * len(cfg.autoattack_curve)
    if attack == "pgn":
        return len(cfg.pgn_c_l) * cfg.pgn_epochs * 3 * cfg.pgn_train_limit / max(n, 1)
    return {"fgm": 1, "mim": cfg.mim_iters, "pgd": cfg.pgd_iters, "masking": cfg.masking_iters,
            "deepfool": cfg.deepfool_iters * min(cfg.deepfool_candidates, classes),
            "cw": cfg.cw_iters * cfg.cw_binary_steps}.get(attack, 1)


def _seconds_per_gradient_batch(target: LoadedRun, batch_size: int) -> float:
    import tensorflow as tf

    import attacks

    @tf.function
    def gradient(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = attacks.cross_entropy_loss(labels=y, logits=target.model_fn(x))
        return tape.gradient(loss, x)

    x, y = tf.constant(target.x[:batch_size]), tf.constant(target.y[:batch_size])
    gradient(x, y)  # traced and compiled: not timed
    started = time.perf_counter()
    gradient(x, y).numpy()
    return (time.perf_counter() - started) * batch_size / max(len(target.y[:batch_size]), 1)
