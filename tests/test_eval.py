"""--mode eval on two tiny trained runs: tables, plots, masking checks, caching, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

import data
from eval import suite
from eval.config import EvalConfig
from eval.evaluate import evaluate
from eval.metrics import Outcome, accuracy_under_budget, summarize
from training.config import DefenseConfig, RunConfig, TrainConfig
from training.loop import train
from training.rundir import RunDirError
from tests.test_cli import assert_one_line_error, run_py

pytestmark = pytest.mark.xdist_group("test_eval")  # one worker: its module fixtures are made once

FAST = dict(mim_iters=5, deepfool_iters=20, cw_iters=10, cw_binary_steps=2, masking_iters=5, batch_size=64)


@pytest.fixture(scope="module")
def two_runs(tiny_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    runs = {}
    for defense, seed in (("none", 1), ("fgm", 2)):
        run_dir = root / f"{defense}-seed{seed}"
        train(data.DataConfig(dataset=f"folder:{tiny_folder}", data_dir=str(root / "tfds")),
              TrainConfig(epochs=2, batch_size=16, width=0.125, seed=seed),
              DefenseConfig(defense=defense, eps=0.5),
              RunConfig(run_dir=str(run_dir), monitor_size=16, checkpoint_every_minutes=0), say=lambda *_: None)
        runs[defense] = run_dir
    return runs


def test_summaries_separate_all_misclassified_from_correct_before():
    outcome = Outcome(labels=np.array([0, 0, 1, 1]), clean_pred=np.array([0, 1, 1, 1]),
                      adv_pred=np.array([1, 1, 0, 1]), l2=np.array([0.2, 0.0, 0.4, 0.9], np.float32))
    s = summarize(outcome)
    assert s["accuracy"] == 0.25 and s["benign_accuracy"] == 0.75
    assert s["success_rate"] == 0.75 and s["success_rate_correct"] == pytest.approx(2 / 3)
    assert s["mean_l2_all"] == pytest.approx(0.2) and s["mean_l2_correct"] == pytest.approx(0.3)
    np.testing.assert_allclose(accuracy_under_budget(outcome, np.array([0.0, 0.3, 1.0])), [0.75, 0.5, 0.25])


@pytest.mark.slow
def test_eval_of_two_runs_writes_tables_plots_and_masking_checks(two_runs, tmp_path):
    out = tmp_path / "eval"
    results = evaluate(EvalConfig(run_dirs=(str(two_runs["fgm"]), str(two_runs["none"])),
                                  source_run=str(two_runs["none"]), eval_dir=str(out), **FAST), say=lambda *_: None)
    stored = json.loads((out / "results.json").read_text())
    assert set(stored["runs"]) == {"fgm-seed2", "none-seed1"}
    fgm_run = stored["runs"]["fgm-seed2"]
    assert set(fgm_run["attacks"]) == {"fgm", "mim", "deepfool", "cw"}
    assert "black" in fgm_run["attacks"]["cw"]  # transferred from the clean run
    assert "black" not in stored["runs"]["none-seed1"]["attacks"]["cw"]  # the source itself
    assert fgm_run["attacks"]["fgm"]["white"]["median_l2_correct"] in (None, pytest.approx(0.5, abs=1e-3))
    assert 0.0 <= fgm_run["attacks"]["deepfool"]["white"]["success_rate"] <= 1.0
    assert fgm_run["masking_checks"] and all({"check", "passed", "detail"} <= set(c) for c in fgm_run["masking_checks"])
    assert fgm_run["seconds_per_epoch"] > 0
    markdown = (out / "results.md").read_text()
    assert "| fgm-seed2 | fgm | CW-L2 |" in markdown and "Gradient-masking checks" in markdown
    assert (out / "accuracy_vs_l2_cw.png").stat().st_size > 1000
    assert (out / "accuracy_vs_l2_deepfool.png").exists()
    assert results["protocol"]["n"] == 24


@pytest.mark.slow
def test_a_second_eval_reuses_cached_attacks(two_runs, tmp_path, monkeypatch):
    cfg = EvalConfig(run_dirs=(str(two_runs["none"]),), attacks=("fgm", "deepfool"), eval_dir=str(tmp_path / "eval"),
                     **FAST)
    first = evaluate(cfg, say=lambda *_: None)
    crafted = []
    real_craft = suite.craft
    monkeypatch.setattr(suite, "craft", lambda *a, **k: crafted.append(a[0]) or real_craft(*a, **k))
    second = evaluate(cfg, say=lambda *_: None)
    assert crafted == []
    assert first["runs"] == second["runs"]
    third = evaluate(EvalConfig(**{**cfg.__dict__, "fgm_eps": 0.25}), say=lambda *_: None)
    assert crafted == ["fgm"]  # only what changed is recomputed
    assert third["runs"]["none-seed1"]["attacks"]["fgm"]["white"]["median_l2_all"] == pytest.approx(0.25, abs=1e-3)


@pytest.mark.slow
def test_a_black_box_source_crafts_once_for_every_later_target(two_runs, tmp_path, monkeypatch):
    """The source's adversarials are cached in its folder: a target evaluated later (here: one
    whose black-box outcomes are gone) transfers them instead of crafting them on the source again."""
    cfg = EvalConfig(run_dirs=(str(two_runs["fgm"]),), attacks=("fgm", "deepfool"), source_run=str(two_runs["none"]),
                     eval_dir=str(tmp_path / "eval"), **FAST)
    first = evaluate(cfg, say=lambda *_: None)["runs"]["fgm-seed2"]["attacks"]
    assert {p.name.split("-")[0] for p in (two_runs["none"] / suite.CACHE_DIR).glob("*-crafted-*.npz")} >= \
        {"deepfool", "fgm"}  # (with those of other tests' settings, where they share the fixture)
    for path in (two_runs["fgm"] / suite.CACHE_DIR).glob("*-black-*.npz"):
        path.unlink()
    crafted = []
    real_craft = suite.craft
    monkeypatch.setattr(suite, "craft", lambda *a, **k: crafted.append(a[0]) or real_craft(*a, **k))
    again = evaluate(cfg, say=lambda *_: None)["runs"]["fgm-seed2"]["attacks"]
    assert crafted == []
    for attack in ("fgm", "deepfool"):
        assert again[attack]["black"] == first[attack]["black"]  # the crafting time too, from the cache
    monkeypatch.setattr(suite, "craft", real_craft)


@pytest.mark.slow
def test_pgn_as_an_attack_draws_figure3(two_runs, tmp_path):
    cfg = EvalConfig(run_dirs=(str(two_runs["none"]),), attacks=("pgn",), eval_dir=str(tmp_path),
                     pgn_c_l=(0.5, 50.0), pgn_eps=(0.25, 1.0), pgn_epochs=40, **FAST)
    points = evaluate(cfg, say=lambda *_: None)["runs"]["none-seed1"]["figure3"]
    assert [p["c_l"] for p in points["pgn"]] == [0.5, 50.0]
    assert points["pgn"][0]["mean_l2"] > points["pgn"][1]["mean_l2"]
    assert [p["eps"] for p in points["pgd"]] == [0.25, 1.0]
    assert points["pgd"][1]["accuracy"] <= points["pgd"][0]["accuracy"]
    assert (tmp_path / "figure3_none-seed1.png").exists()


@pytest.mark.slow
def test_bad_eval_input_is_refused(two_runs, tmp_path):
    empty = tmp_path / "untrained"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="no trained weights"):
        evaluate(EvalConfig(run_dirs=(str(empty),)), say=lambda *_: None)
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((two_runs["none"] / "config.json").read_text())
    config["dataset"]["name"] = "folder:/elsewhere"
    (other / "config.json").write_text(json.dumps(config))
    (other / "ema_classifier.weights.h5").write_bytes((two_runs["none"] / "ema_classifier.weights.h5").read_bytes())
    with pytest.raises(RunDirError, match="attacks must share one test set"):
        evaluate(EvalConfig(run_dirs=(str(two_runs["none"]),), source_run=str(other)), say=lambda *_: None)


@pytest.mark.slow
def test_eval_command_line_errors(two_runs, tmp_path):
    assert_one_line_error(run_py("--mode", "eval", "--run_dir", str(two_runs["none"]), "--attacks", "fgm,laser"),
                          "laser", "--attacks")
    assert_one_line_error(run_py("--mode", "eval", "--run_dir", str(tmp_path)), "not a run directory")
    result = run_py("--mode", "eval", "--run_dir", str(two_runs["fgm"]), "--attacks", "fgm", "--masking_iters", "2",
                    "--eval_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "results.md").exists()


@pytest.mark.slow
def test_deepfool_and_cw_median_l2_match_foolbox_on_a_trained_cnn(two_runs, tiny_folder):
    """The issue's acceptance bar: medians within 2% of foolbox 3.3.4's on a trained model."""
    fb = pytest.importorskip("foolbox")
    import tensorflow as tf

    import attacks
    from eval.runs import load_run

    run = load_run(two_runs["none"])
    model = run.build_classifier()
    dataset = data.load_dataset(run.data_config(test_limit=0))
    x = tf.constant(dataset.test_images.astype(np.float32) / 255.0)
    predictions = np.argmax(model(x).numpy(), axis=-1).astype(np.int32)
    fmodel = fb.TensorFlowModel(tf.function(model, reduce_retracing=True), bounds=(0, 1))

    def fooled_and_median_l2(x_adv):
        # foolbox's CW returns an all-black image where it finds nothing (its best_advs start at
        # zeros), which a model may misclassify by chance: not an adversarial it found.
        found = np.any(np.asarray(x_adv) != 0, axis=(1, 2, 3))
        fooled = (np.argmax(model(x_adv).numpy(), axis=-1) != predictions) & found
        return fooled, np.median(np.sqrt(np.sum((np.asarray(x_adv) - x.numpy()) ** 2, axis=(1, 2, 3)))[fooled])

    def assert_agree(ours, theirs):
        (our_fooled, our_median), (their_fooled, their_median) = map(fooled_and_median_l2, (ours, theirs))
        assert our_fooled.sum() >= 12 and abs(int(our_fooled.sum()) - int(their_fooled.sum())) <= 1
        assert our_median == pytest.approx(their_median, rel=0.02)

    ours = attacks.deepfool(model, x, nb_candidate=10, overshoot=0.02, max_iter=100)
    theirs = fb.attacks.L2DeepFoolAttack(steps=100, candidates=10, overshoot=0.02, loss="logits")(
        fmodel, x, fb.criteria.Misclassification(tf.constant(predictions, tf.int64)), epsilons=None)[0]
    assert_agree(ours, theirs)

    ours = attacks.carlini_wagner_l2(model, x, y=predictions, binary_search_steps=5, max_iterations=100,
                                     learning_rate=5e-3, initial_const=1e-2)
    theirs = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=100, stepsize=5e-3,
                                              initial_const=1e-2, confidence=0, abort_early=True)(
        fmodel, x, tf.constant(predictions, tf.int64), epsilons=None)[0]
    assert_agree(ours, theirs)


@pytest.mark.slow
def test_sibling_defenses_appear_in_the_eval_table_beside_the_others(two_runs, tiny_folder, tmp_path):
    runs = [str(two_runs["fgm"])]
    for defense in ("l2l", "rvs"):
        run_dir = tmp_path / defense
        train(data.DataConfig(dataset=f"folder:{tiny_folder}", data_dir=str(tmp_path / "tfds")),
              TrainConfig(epochs=1, batch_size=16, width=0.125, seed=3),
              DefenseConfig(defense, eps=0.5, gen_width=0.125, **({"rvs_norm": "2"} if defense == "rvs" else {})),
              RunConfig(run_dir=str(run_dir), monitor_size=16, checkpoint_every_minutes=0), say=lambda *_: None)
        runs.append(str(run_dir))
    evaluate(EvalConfig(run_dirs=tuple(runs), attacks=("fgm",), eval_dir=str(tmp_path / "eval"), **FAST),
             say=lambda *_: None)
    markdown = (tmp_path / "eval" / "results.md").read_text()
    for row in ("| fgm-seed2 | fgm | FGM |", "| l2l | l2l | FGM |", "| rvs | rvs | FGM |"):
        assert row in markdown


def test_seconds_per_epoch_is_the_median_step_rate_not_the_stalled_epochs(tmp_path):
    """An epoch's examples over the median examples/s of training's logging windows: the window
    an epoch-end wait or the compile fell in does not move it; without windows, the epochs' median."""
    from eval.runs import TrainedRun

    def write(records):
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"settings": {"train.batch_size": 100}, "dataset": {"train_size": 1050}}  # 10 steps an epoch
    windows = [{"kind": "train", "step": 5 * i, "examples_per_second": rate}
               for i, rate in enumerate([500.0, 500.0, 20.0, 500.0, 400.0], start=1)]
    epochs = [{"kind": "epoch_record", "step": 10 * e, "epoch": e, "seconds_per_epoch": s}
              for e, s in ((1, 30.0), (2, 62.0), (3, 62.0))]
    write(windows + epochs)
    run = TrainedRun(tmp_path, config, None)
    assert run.seconds_per_epoch() == pytest.approx(1000 / 500.0)
    write(epochs)
    assert run.seconds_per_epoch() == pytest.approx(62.0)  # epoch 1 compiled the step: left out


@pytest.mark.slow
def test_an_evaluation_predicts_the_clean_test_images_once_per_run(two_runs, tmp_path, monkeypatch):
    passes = []
    real_predict = suite.LoadedRun.predict

    def counting(self, images, batch_size):
        if images is self.x:
            passes.append(self.run.name)
        return real_predict(self, images, batch_size)
    monkeypatch.setattr(suite.LoadedRun, "predict", counting)
    settings = {**FAST, "attacks": ("fgm", "mim", "autoattack"), "autoattack_version": "custom",
                "autoattack_attacks": ("apgd-ce",), "autoattack_iters": 2, "autoattack_curve": (0.5,)}
    evaluate(EvalConfig(run_dirs=(str(two_runs["fgm"]),), eval_dir=str(tmp_path / "eval"), **settings),
             say=lambda *_: None)
    assert passes == ["fgm-seed2"]  # shared by the benign accuracy, FGM, MIM, the masking checks and AutoAttack
