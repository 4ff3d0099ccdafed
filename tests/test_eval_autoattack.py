"""--attacks autoattack in --mode eval: the worst case over every attack inside the ball, the
per-example ids and flags, robustbench.json, the AutoAttack masking checks, the cache, the
CleverHans engine and --eval_preset."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import data
from eval import autoattack_eval, masking, suite
from eval.autoattack_eval import AutoAttackOutcome
from eval.config import AUTOATTACK_FIXED, AUTOATTACK_PARTS, EvalConfig
from eval.evaluate import evaluate
from eval.metrics import Outcome

pytestmark = pytest.mark.xdist_group("test_eval_autoattack")  # one worker: its module fixtures are made once

SMALL_AA = dict(attacks=("fgm", "mim", "autoattack"), mim_iters=5, masking_iters=3, batch_size=32,
                autoattack_version="custom", autoattack_attacks=("apgd-ce", "apgd-t", "square"),
                autoattack_iters=5, autoattack_square_queries=20, autoattack_curve=(0.5, 4.0))


def four_class_folder(root, per_class_train=24, per_class_test=6, size=16, seed=0):
    """PATH/{train,test}/<class>/*.png, four colours (APGD-T needs at least four classes)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = [(170, 0, 0), (0, 170, 0), (0, 0, 170), (120, 120, 0)]
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for c, colour in enumerate(colours):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.integers(0, 85, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from training.config import DefenseConfig, RunConfig, TrainConfig
    from training.loop import train

    root = tmp_path_factory.mktemp("aa_eval")
    folder = four_class_folder(root / "images")
    run_dir = root / "fgm-run"
    train(data.DataConfig(dataset=f"folder:{folder}", data_dir=str(root / "tfds")),
          TrainConfig(epochs=3, batch_size=16, width=0.125, seed=0), DefenseConfig(defense="fgm", eps=0.5),
          RunConfig(run_dir=str(run_dir), monitor_size=8, checkpoint_every_minutes=0), say=lambda *_: None)
    return run_dir, folder


def _outcome(labels, clean, adv, l2):
    return Outcome(np.array(labels), np.array(clean), np.array(adv), np.array(l2, np.float32))


def test_the_flag_names_are_the_librarys():
    assert AUTOATTACK_PARTS == importlib.import_module("attacks.autoattack").ATTACKS
    assert AUTOATTACK_FIXED == importlib.import_module("attacks.autoattack").VERSIONS
    with pytest.raises(ValueError, match="custom"):
        EvalConfig(run_dirs=("r",), autoattack_version="custom").validate()
    with pytest.raises(ValueError, match="needs --autoattack_version custom"):
        EvalConfig(run_dirs=("r",), autoattack_attacks=("apgd-ce",)).validate()
    with pytest.raises(ValueError, match="attack_engine"):
        EvalConfig(run_dirs=("r",), attack_engine="foolbox").validate()
    assert EvalConfig(run_dirs=("r",), autoattack_norm="inf").autoattack_radius == pytest.approx(8 / 255)
    # The compiled engine leaves FGM's cache key as it was before engines existed.
    assert "engine" not in EvalConfig(run_dirs=("r",)).attack_settings("fgm")
    assert EvalConfig(run_dirs=("r",), attack_engine="cleverhans").attack_settings("mim")["engine"] == "cleverhans"


def test_the_worst_case_counts_each_attack_only_inside_the_ball():
    labels = [0, 0, 0, 0, 0]
    flags = {"clean": np.array([1, 1, 1, 1, 0], bool), "apgd-ce": np.array([1, 1, 1, 0, 0], bool),
             "square": np.array([1, 1, 0, 0, 0], bool)}
    aa = AutoAttackOutcome(np.array(labels), np.array([0, 0, 0, 0, 1]), np.array([0, 0, 1, 1, 1]), flags,
                           {"seconds": {}, "forward_passes": {"apgd-ce": 10}, "attacked": {}, "rejected": {},
                            "max_perturbation": 0.5})
    others = {
        "fgm": _outcome(labels, [0, 0, 0, 0, 1], [1, 0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5, 0.5]),    # breaks #0 at eps
        "cw": _outcome(labels, [0, 0, 0, 0, 1], [0, 1, 1, 0, 1], [0.0, 0.9, 0.2, 0.0, 0.0]),     # #1 too far
    }
    cfg = EvalConfig(run_dirs=("r",), autoattack_version="custom", autoattack_attacks=("apgd-ce", "square"))
    record, worst = autoattack_eval.summary(aa, others, cfg, [])
    np.testing.assert_array_equal(worst, [False, True, False, False, False])
    assert record["robust_accuracy"] == pytest.approx(0.4) and record["worst_case"]["accuracy"] == pytest.approx(0.2)
    assert record["worst_case"]["found_beyond_autoattack"] == {"fgm": 1, "cw": 0}
    assert record["accuracy_after"] == {"clean": 0.8, "apgd-ce": 0.6, "square": 0.4}
    # Square broke #2, which CW broke inside the ball too: not a Square-only win.
    assert record["square_only_fraction"] == 0.0
    record, _ = autoattack_eval.summary(aa, {}, cfg, [])
    assert record["square_only_fraction"] == pytest.approx(0.2)


def test_autoattack_masking_checks_fail_when_they_should():
    def checks(**aa):
        return {c["check"]: c["passed"] for c in masking.run_checks({"attacks": {}, "autoattack": aa}, None)}

    good = checks(square_only_fraction=0.0, apgd_t_gain=0.01,
                  curve=[{"eps": 0.25, "accuracy": 0.5}, {"eps": 0.5, "accuracy": 0.4}])
    assert len(good) == 3 and all(good.values())
    bad = checks(square_only_fraction=0.05, apgd_t_gain=0.2,
                 curve=[{"eps": 0.25, "accuracy": 0.3}, {"eps": 0.5, "accuracy": 0.4}])
    assert len(bad) == 3 and not any(bad.values())


def test_the_robustbench_record_has_model_infos_fields():
    record = {"eps": 0.5, "clean_accuracy": 0.5123, "robust_accuracy": 0.3, "threat_model": "L2",
              "version": "standard", "attacks": ["apgd-ce"], "forward_passes": {"clean": 10, "apgd-ce": 1000},
              "worst_case": {"accuracy": 0.29}}
    entry = autoattack_eval.robustbench_record("r", "CNN", "cifar10", 1000, record, "abc")
    for field in ("name", "architecture", "eps", "clean_acc", "autoattack_acc", "reported", "additional_data",
                  "number_forward_passes", "dataset", "venue", "link"):
        assert field in entry
    assert entry["clean_acc"] == "51.23" and entry["autoattack_acc"] == "30.00" and entry["eps"] == "0.5"
    assert entry["n_examples"] == 1000 and entry["autoattack_forward_passes"] == 1010


@pytest.mark.slow
def test_eval_with_autoattack_writes_ids_flags_and_robustbench_and_reuses_its_cache(tiny_run, tmp_path, monkeypatch):
    run_dir, folder = tiny_run
    out = tmp_path / "eval"
    cfg = EvalConfig(run_dirs=(str(run_dir),), eval_dir=str(out), **SMALL_AA)
    results = evaluate(cfg, say=lambda *_: None)
    stored = json.loads((out / "results.json").read_text())
    run = stored["runs"]["fgm-run"]
    ids = stored["protocol"]["example_ids"]
    assert len(ids) == 24 and all((folder / i).is_file() for i in ids)
    flags = run["per_example"]
    assert {"clean", "fgm", "mim", "masking-pgd", "autoattack/apgd-ce", "autoattack/square", "autoattack",
            "worst_case"} <= set(flags)
    assert all(len(v) == 24 for v in flags.values())
    worst = np.array(flags["worst_case"])
    for name in ("fgm", "mim", "autoattack"):
        assert not np.any(worst & ~np.array(flags[name]))  # nothing robust in the worst case but broken by one
    aa = run["autoattack"]
    assert aa["robust_accuracy"] == pytest.approx(np.mean(flags["autoattack"]))
    assert aa["accuracy_after"]["clean"] == pytest.approx(np.mean(flags["clean"]))
    assert set(aa["seconds"]) == {"clean", "apgd-ce", "apgd-t", "square"}
    assert [p["eps_multiple"] for p in aa["curve"]] == [0.5, 1.0, 4.0]
    names = [c["check"] for c in run["masking_checks"]]
    assert any("Square" in n for n in names) and any("APGD-T" in n for n in names)
    assert any("monotonically" in n for n in names)
    entry = json.loads((out / "robustbench.json").read_text())
    assert entry["autoattack_acc"] == f"{100 * aa['robust_accuracy']:.2f}" and entry["n_examples"] == 24
    assert entry["threat_model"] == "L2" and entry["autoattack_version"] == "custom"
    markdown = (out / "results.md").read_text()
    assert "## AutoAttack" in markdown and "after apgd-t" in markdown and "## Seconds per attack" in markdown
    assert run["attacks"]["fgm"]["white"]["seconds"] > 0
    line = stored["protocol"]["settings_line"]
    assert "AutoAttack custom (apgd-ce, apgd-t, square)" in line and "CW-L2" not in line  # only what ran

    aa_module = importlib.import_module("attacks.autoattack")
    monkeypatch.setattr(aa_module, "autoattack", lambda *a, **k: pytest.fail("AutoAttack ran again"))
    monkeypatch.setattr(suite, "craft", lambda *a, **k: pytest.fail("an attack ran again"))
    again = evaluate(cfg, say=lambda *_: None)
    assert again["runs"]["fgm-run"]["per_example"] == results["runs"]["fgm-run"]["per_example"]
    assert again["runs"]["fgm-run"]["autoattack"]["seconds"] == results["runs"]["fgm-run"]["autoattack"]["seconds"]


@pytest.mark.slow
def test_the_cleverhans_engine_gives_the_compiled_accuracies(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    accuracies = {}
    for engine in ("compiled", "cleverhans"):
        cfg = EvalConfig(run_dirs=(str(run_dir),), attacks=("fgm", "mim"), eval_dir=str(tmp_path / engine),
                         mim_iters=10, masking_iters=2, attack_engine=engine)
        results = evaluate(cfg, say=lambda *_: None)
        run = results["runs"]["fgm-run"]
        accuracies[engine] = {a: run["attacks"][a]["white"]["accuracy"] for a in ("fgm", "mim")}
        accuracies[engine]["flags"] = run["per_example"]["mim"]
        assert results["protocol"]["attack_engine"] == engine
        assert f"engine: `{engine}`" in (tmp_path / engine / "results.md").read_text()
    assert accuracies["compiled"] == accuracies["cleverhans"]
    assert accuracies["compiled"]["fgm"] < json.loads((tmp_path / "compiled" / "results.json").read_text()
                                                      )["runs"]["fgm-run"]["benign_accuracy"] + 1e-9


@pytest.mark.slow
def test_run_py_autoattack_with_the_quick_preset_and_explicit_flags(tiny_run, tmp_path):
    from tests.test_cli import run_py

    run_dir, _ = tiny_run
    out = tmp_path / "cli"
    result = run_py("--mode", "eval", "--run_dir", str(run_dir), "--eval_preset", "quick", "--attacks",
                    "fgm,autoattack", "--test_limit", "12", "--autoattack_iters", "3", "--autoattack_curve", "2",
                    "--masking_iters", "2", "--eval_dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    stored = json.loads((out / "results.json").read_text())
    protocol = stored["protocol"]
    assert protocol["n"] == 12 and len(protocol["example_ids"]) == 12 and protocol["eval_preset"] == "quick"
    aa = protocol["settings"]["autoattack"]
    assert aa["attacks"] == ["apgd-ce", "apgd-t"] and aa["iters"] == 3  # the preset's parts, the explicit iters
    assert protocol["settings"]["mim"]["mim_iters"] == 20 and protocol["settings"]["masking"]["masking_iters"] == 2
    assert len(stored["runs"]["fgm-run"]["per_example"]["autoattack"]) == 12
    entry = json.loads((out / "robustbench.json").read_text())
    assert entry["name"] == "fgm-run" and float(entry["autoattack_acc"]) <= float(entry["clean_acc"])


def test_completing_the_first_attacks_gives_the_standard_autoattack(tmp_path, monkeypatch):
    """APGD-CE + APGD-T on every image, then FAB-T and Square on the ones they left robust: on all
    the images, exactly the standard version run in one go; on a subset, its flags restricted. An
    affine model whose input gradient is zero (masked), so that the gradient attacks fail and
    gradient-free Square finds what they missed."""
    import types

    import keras
    import tensorflow as tf

    from attacks.autoattack import autoattack
    from tests.autoattack_models import affine_model, middle_of_box, minimal_distance

    affine, weights, bias = affine_model(5)
    model = keras.Sequential([affine, keras.layers.Lambda(lambda z: 0.0 * z + tf.stop_gradient(z))])
    x = middle_of_box(40)
    distance, y = minimal_distance(x, weights, bias, 2)
    eps = 2 * float(np.median(distance))
    run = types.SimpleNamespace(name="affine", run_dir=tmp_path, build_classifier=lambda: model,
                                fingerprint=lambda: "affine-0")
    target = suite.LoadedRun(run, x, y, "affine", 0)
    cfg = EvalConfig(run_dirs=("affine",), autoattack_version="custom", autoattack_attacks=("apgd-ce", "apgd-t"),
                     autoattack_iters=1, autoattack_square_queries=50, autoattack_eps=eps, batch_size=16)
    aa = autoattack_eval.autoattack_outcome(target, cfg)
    everything = np.arange(len(y))
    done = autoattack_eval.standard_completion(target, cfg, aa, everything)
    one = {"n_iter": 1}
    direct = autoattack(target.model_fn, x, y, eps=eps, version="standard", seed=0, batch_size=16,
                        attack_kwargs={"apgd-ce": one, "apgd-t": one, "fab-t": one, "square": {"n_queries": 50}})
    assert list(done["flags"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    for stage, flags in direct.robust_flags.items():
        np.testing.assert_array_equal(done["flags"][stage], flags, err_msg=stage)
    assert done["found"]["square"] > 0  # the completion finds what the first attacks missed
    assert done["accuracy"] == pytest.approx(direct.final_robust_accuracy)
    assert done["first_attacks_accuracy"] == pytest.approx(np.mean(aa.robust))
    assert sum(done["found"].values()) == round((done["first_attacks_accuracy"] - done["accuracy"]) * len(y))
    assert np.all(distance[~np.array(done["flags"]["square"])] <= eps * (1 + 1e-4))  # nothing broken out of reach

    picks = np.array([1, 4, 7, 10, 13, 22, 30, 39])
    part = autoattack_eval.standard_completion(target, cfg, aa, picks)
    assert part["n"] == 8 and part["examples"] == picks.tolist()
    for stage in ("clean", "apgd-ce", "apgd-t"):
        np.testing.assert_array_equal(part["flags"][stage], aa.flags[stage][picks])
    for earlier, later in (("apgd-t", "fab-t"), ("fab-t", "square")):  # each attack only removes robust examples
        assert not np.any(np.array(part["flags"][later]) & ~np.array(part["flags"][earlier]))
    # A second call reads the cache.
    monkeypatch.setattr(importlib.import_module("attacks.autoattack"), "autoattack",
                        lambda *a, **k: pytest.fail("AutoAttack ran again"))
    assert autoattack_eval.standard_completion(target, cfg, aa, picks)["flags"] == part["flags"]
    with pytest.raises(ValueError, match="standard's first attacks"):
        autoattack_eval.completion_attacks(("apgd-ce", "square"))
    assert autoattack_eval.completion_attacks(("apgd-ce",)) == ("apgd-t", "fab-t", "square")
