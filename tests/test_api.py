"""The Python API on a user's own Keras model: the README's and docs/api.md's snippets as written,
what evaluate_model and train_model return, one threat model per call, and bad arguments."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(verbose=0)


def snippets(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run_snippet(snippet: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_readme_has_the_two_api_snippets_and_points_to_the_api_page():
    found = snippets(ROOT / "README.md")
    assert any("evaluate_model(" in s for s in found) and any("train_model(" in s for s in found)
    assert "(docs/api.md)" in (ROOT / "README.md").read_text()


def test_the_api_page_has_a_snippet_for_each_call_a_user_composes():
    found = snippets(ROOT / "docs" / "api.md")
    assert len(found) == 4
    assert 'norm="inf", eps=8 / 255' in found[0] and "norm=2, eps=0.5" in found[0]
    assert all(a in found[1] for a in ('"fgm"', '"mim"', '"deepfool"', '"cw"'))
    assert "attacks.projected_gradient_descent(" in found[2] and "evaluate_model" not in found[2]
    assert "train_model(" in found[3] and "evaluate_model(trained" in found[3]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["evaluate_model(", "train_model("])
def test_each_readme_snippet_runs_as_written(tmp_path, which):
    run_snippet(next(s for s in snippets(ROOT / "README.md") if which in s), tmp_path)
    if which == "evaluate_model(":
        results = json.loads((tmp_path / "my-eval" / "results.json").read_text())
        run = results["runs"]["model"]
        assert set(run["attacks"]) == {"fgm", "mim"} and run["autoattack"]["version"] == "standard"
        bench = json.loads((tmp_path / "my-eval" / "robustbench.json").read_text())
        assert float(bench["autoattack_acc"]) <= float(bench["clean_acc"])
    else:
        run = tmp_path / "runs" / "my-pgn"
        assert (run / "ema_classifier.weights.h5").exists() and (run / "checkpoints" / "checkpoint").exists()
        config = json.loads((run / "config.json").read_text())
        assert config["settings"]["defense.defense"] == "pgn" and config["settings"]["data.dataset"] == "arrays:arrays"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4), ids=["autoattack-robustbench", "paper-attacks", "one-attack", "train"])
def test_each_api_page_snippet_runs_as_written(tmp_path, index):
    done = run_snippet(snippets(ROOT / "docs" / "api.md")[index], tmp_path)
    lines = done.stdout.strip().splitlines()
    if index == 0:
        for folder, threat, eps in (("eval-linf", "Linf", 8 / 255), ("eval-l2", "L2", 0.5)):
            bench = json.loads((tmp_path / folder / "robustbench.json").read_text())
            assert bench["threat_model"] == threat and float(bench["eps"]) == pytest.approx(eps, rel=1e-5)
            assert bench["autoattack_version"] == "standard" and bench["n_examples"] == 32
        assert lines[0].startswith("evaluate_model: 32 images, Linf eps 0.0313725: autoattack (standard:")
    elif index == 1:
        assert [line.split()[0] for line in lines[:4]] == ["fgm", "mim", "deepfool", "cw"]
    elif index == 2:
        assert float(lines[0]) <= 8 / 255 + 1e-6
    else:
        test_acc, clean = map(float, lines[-2].split())
        assert test_acc == pytest.approx(clean, abs=1e-6)
        assert (tmp_path / "runs" / "my-pgd" / "ema_classifier.weights.h5").exists()


@pytest.mark.slow
def test_a_script_outside_the_checkout_imports_the_api_after_pip_install_e(tmp_path):
    """pyproject.toml: `pip install -e .` (as docs/api.md says) makes the packages importable from
    any folder; without it the same script fails as a new user's did."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 64:
        pytest.skip(f"editable installs need setuptools >= 64, this Python has {setuptools.__version__}")
    script = tmp_path / "mine" / "evaluate_mine.py"
    script.parent.mkdir()
    script.write_text(
        "from eval import evaluate_model\nfrom training import train_model\nimport attacks, keras, numpy as np\n"
        "model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])\n"
        "x, y = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype('float32'), np.arange(8) % 4\n"
        "print(evaluate_model(model, x, y, attacks='fgm', verbose=0).attacks['fgm']['n'])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    bare = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert bare.returncode != 0 and "No module named 'eval'" in bare.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index",
                              "--no-deps", "-e", str(ROOT)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    done = subprocess.run([str(python), str(script)], cwd=script.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "8"


def _tiny_model(outputs=4, softmax=False, shape=(8, 8, 3)):
    layers = [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(outputs)]
    if softmax:
        layers.append(keras.layers.Softmax())
    return keras.Sequential(layers)


class SubclassedNet(keras.Model):
    """A model with no input_shape until called: the evaluation API must not need one. Its
    __init__ takes no **kwargs, so Keras cannot rebuild it from get_config()."""

    def __init__(self):
        super().__init__()
        self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(4)

    def call(self, x, training=False):
        return self.dense(self.flat(x))


class RebuildableNet(keras.Model):
    """A subclassed model whose get_config() rebuilds it (its __init__ passes **kwargs on)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(4)

    def call(self, x, training=False):
        return self.dense(self.flat(x))


def _xy(n=12, low=0.0, high=1.0):
    rng = np.random.default_rng(0)
    return rng.uniform(low, high, size=(n, 8, 8, 3)).astype(np.float32), np.arange(n) % 4


@pytest.mark.parametrize("change, match", [
    (lambda x, y, kw: (x * 255, y, kw), r"x must lie in \[0, 1\], got values from .* to 2"),
    (lambda x, y, kw: (x, np.eye(4)[y], kw), r"y must be integer labels of shape \[N\].*one-hot"),
    (lambda x, y, kw: (x, y[:-1], kw), r"x has 12 images but y has 11 labels"),
    (lambda x, y, kw: (x, y, {**kw, "eps": 0.0}), r"eps must be a number > 0"),
    (lambda x, y, kw: (x, y, {**kw, "eps": -1}), r"eps must be a number > 0"),
    (lambda x, y, kw: (x, y, {**kw, "eps": "0.5"}), r"eps must be a number > 0"),
    (lambda x, y, kw: (x[0], y, kw), r"x must be images \[N, H, W, C\]"),
    (lambda x, y, kw: (x[:0], y[:0], kw), r"x holds no images"),
    (lambda x, y, kw: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y, kw), r"x holds 1 NaN"),
    (lambda x, y, kw: (x, y, {**kw, "norm": "inf", "attacks": ("fgm", "deepfool")}),
     r"deepfool has no L-inf version.*norm='inf' choose from autoattack, fgm, mim, pgd"),
    (lambda x, y, kw: (x, y, {**kw, "norm": np.inf, "attacks": ("cw",)}), r"cw has no L-inf version"),
    (lambda x, y, kw: (x, y, {**kw, "fgm_eps": 0.3}), r"fgm_eps would give one attack its own threat model"),
    (lambda x, y, kw: (x, y, {**kw, "autoattack_norm": "inf"}), r"autoattack_norm would give one attack"),
    (lambda x, y, kw: (x, y, {**kw, "norm": 1}), r"norm must be 2 or 'inf'"),
    (lambda x, y, kw: (x, y, {**kw, "attacks": ("fgsm",)}), r"choose distinct names from autoattack, fgm"),
    (lambda x, y, kw: (x, y, {**kw, "verbose": 2}), r"verbose must be 0 \(silent\) or 1"),
    (lambda x, y, kw: (x, y, {**kw, "mim_iterations": 3}), r"unknown setting"),
])
def test_bad_arguments_to_evaluate_model_name_the_problem(change, match):
    from eval import evaluate_model
    x, y = _xy()
    x, y, kwargs = change(x, y, {"attacks": ("fgm",)})
    with pytest.raises(ValueError, match=match):
        evaluate_model(_tiny_model(), x, y, **kwargs)


def test_a_model_returning_probabilities_is_refused():
    from eval import evaluate_model
    x, y = _xy()
    with pytest.raises(ValueError, match="returns probabilities"):
        evaluate_model(_tiny_model(softmax=True), x, y, attacks=("fgm",))


@pytest.mark.parametrize("model, match", [
    (lambda: _tiny_model(), r"the model takes images of shape \(8, 8, 3\) but got \(8, 8, 1\): grayscale"),
    (lambda: SubclassedNet(), r"the model cannot take images of shape \(8, 8, 1\)"),
])
def test_a_grayscale_image_on_a_colour_model_is_one_short_line(model, match):
    from eval import evaluate_model
    net = model()
    if isinstance(net, SubclassedNet):
        net(np.zeros((1, 8, 8, 3), np.float32))  # built for colour images
    x, y = _xy()
    with pytest.raises(ValueError, match=match) as caught:
        evaluate_model(net, x[..., :1], y, attacks="fgm")
    assert len(str(caught.value)) < 500 and "tf.Tensor" not in str(caught.value)


def test_one_attack_by_name_a_numpy_radius_uint8_images_and_a_dataset_all_work():
    import tensorflow as tf

    from eval import evaluate_model
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    x, y = _xy()
    x8 = np.round(x * 255).astype(np.uint8)
    by_name = evaluate_model(model, x8, y, attacks="fgm", eps=np.float32(0.5), **QUIET)
    assert list(by_name.attacks) == ["fgm"] and by_name.eps == 0.5
    as_float = evaluate_model(model, x8.astype(np.float32) / 255, y, attacks=("fgm",), **QUIET)
    batches = tf.data.Dataset.from_tensor_slices((x8, y)).batch(5)
    from_dataset = evaluate_model(model, batches, attacks=["fgm"], **QUIET)
    for other in (as_float, from_dataset):
        np.testing.assert_array_equal(other.adversarial["fgm"], by_name.adversarial["fgm"])
        np.testing.assert_array_equal(other.robust["fgm"], by_name.robust["fgm"])
    with pytest.raises(ValueError, match="give no separate labels"):
        evaluate_model(model, batches, y, attacks="fgm")


def _robust_by_prediction(model, x_adv, y, clean):
    return (np.argmax(model(x_adv), -1) == y) & (clean == y)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["inf", 2])
def test_every_adversarial_lies_in_the_ball_and_the_box_and_the_flags_match_it(norm):
    from eval import evaluate_model
    keras.utils.set_random_seed(1)
    model = _tiny_model()
    x, y = _xy(16, 0.2, 0.8)  # away from the box's walls: an L-inf FGM moves every pixel by eps exactly
    eps = 8 / 255 if norm == "inf" else 0.5
    asked = ("autoattack", "fgm", "mim", "pgd") + (("deepfool", "cw") if norm == 2 else ())
    result = evaluate_model(model, x, y, norm=norm, eps=eps, attacks=asked, version="custom",
                            autoattack_attacks=("apgd-ce", "apgd-t"), autoattack_iters=5, mim_iters=5, pgd_iters=5,
                            deepfool_iters=10, cw_iters=10, cw_binary_steps=2, **QUIET)
    assert result.norm == ("inf" if norm == "inf" else "2") and set(result.adversarial) == set(asked)
    assert json.loads(json.dumps(result.as_dict()))["eps"] == pytest.approx(eps)  # the summaries, JSON-ready
    for attack, x_adv in result.adversarial.items():
        assert x_adv.shape == x.shape and x_adv.dtype == np.float32
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0, attack
        delta = (x_adv - x).reshape(len(x), -1)
        size = np.abs(delta).max(1) if norm == "inf" else np.sqrt((delta ** 2).sum(1))
        if attack not in ("deepfool", "cw"):  # minimum-norm attacks have no ball: their measure is l2
            assert size.max() <= eps * (1 + 1e-5) + 1e-6, attack
        np.testing.assert_allclose(result.l2[attack], np.sqrt((delta ** 2).sum(1)), rtol=1e-5, atol=1e-6)
        robust = result.robust[attack]
        assert robust.dtype == bool and robust.shape == (16,)
        if attack != "autoattack":
            assert robust.mean() == pytest.approx(result.attacks[attack]["accuracy"])
        np.testing.assert_array_equal(robust, _robust_by_prediction(model, x_adv, y, result.clean_predictions))
    fgm = (result.adversarial["fgm"] - x).reshape(len(x), -1)
    if norm == "inf":  # FGM in the asked norm: every pixel moved by eps (an L2 FGM would not)
        np.testing.assert_allclose(np.abs(fgm), eps, rtol=1e-4)
    else:
        np.testing.assert_allclose(np.sqrt((fgm ** 2).sum(1)), eps, rtol=1e-4)
    flags = result.autoattack_flags
    assert list(flags) == ["clean", "apgd-ce", "apgd-t"]
    assert result.robust_accuracy == pytest.approx(np.mean(flags["apgd-t"]))
    np.testing.assert_array_equal(result.robust["autoattack"], flags["apgd-t"])
    for i, stage in enumerate(result.broken_by):
        assert (stage == "") == bool(flags["apgd-t"][i])
        if stage:
            assert not flags[stage][i] and all(flags[s][i] for s in list(flags)[:list(flags).index(stage)])


@pytest.mark.slow
def test_verbose_1_prints_the_plan_and_progress_and_0_prints_nothing(capsys):
    from eval import evaluate_model
    x, y = _xy()
    kwargs = dict(attacks=("autoattack", "fgm"), version="custom", autoattack_attacks=("apgd-ce",),
                  autoattack_iters=2)
    evaluate_model(_tiny_model(), x, y, verbose=1, **kwargs)
    said = capsys.readouterr().out
    assert said.startswith("evaluate_model: 12 images, L2 eps 0.5: autoattack (custom: apgd-ce), fgm\n")
    assert "fgm on model (12 examples)" in said
    evaluate_model(_tiny_model(), x, y, verbose=0, **kwargs)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""


@pytest.mark.slow
def test_a_subclassed_model_without_input_shape_is_evaluated():
    from eval import evaluate_model
    x, y = _xy()
    model = SubclassedNet()
    result = evaluate_model(model, x, y, eps=0.5, attacks=("autoattack", "fgm"), version="custom",
                            autoattack_attacks=("apgd-ce",), autoattack_iters=5, **QUIET)
    assert result.n == 12 and 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
    assert result.attacks["fgm"]["accuracy"] <= result.clean_accuracy


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run of --mode train's loop on a tiny four-class image folder, and its --mode eval results."""
    import data
    from eval.config import EvalConfig
    from eval.evaluate import evaluate
    from training.config import DefenseConfig, RunConfig, TrainConfig
    from training.loop import train
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("api_vs_eval")
    folder = write_image_folder(root / "images", classes=4, per_class_train=12, per_class_test=5)
    run_dir = root / "run"
    train(data.DataConfig(dataset=f"folder:{folder}", data_dir=str(root / "tfds")),
          TrainConfig(epochs=2, batch_size=16, width=0.125, seed=0), DefenseConfig(defense="fgm", eps=0.5),
          RunConfig(run_dir=str(run_dir), monitor_size=8, checkpoint_every_minutes=0), say=lambda *_: None)
    settings = dict(attacks=("fgm", "mim", "deepfool", "autoattack"), mim_iters=5, deepfool_iters=10,
                    autoattack_version="custom", autoattack_attacks=("apgd-ce", "apgd-t"), autoattack_iters=5,
                    autoattack_curve=(), masking_iters=2, batch_size=8)
    results = evaluate(EvalConfig(run_dirs=(str(run_dir),), eval_dir=str(root / "eval"), **settings),
                       say=lambda *_: None)
    return run_dir, settings, results


@pytest.mark.slow
def test_evaluate_model_gives_mode_evals_numbers_on_the_same_runs_model_and_images(trained_run):
    import data
    from eval import evaluate_model
    from eval.runs import load_run

    run_dir, settings, results = trained_run
    run = load_run(run_dir)
    dataset = data.load_dataset(run.data_config(0))
    settings = {k: v for k, v in settings.items() if k not in ("autoattack_version", "autoattack_curve",
                                                              "masking_iters")}
    mine = evaluate_model(run.build_classifier(), dataset.test_images, dataset.test_labels, eps=0.5, norm=2,
                          version="custom", **settings, **QUIET)
    theirs = results["runs"]["run"]
    assert mine.clean_accuracy == theirs["benign_accuracy"]
    for attack in ("fgm", "mim", "deepfool"):
        assert mine.attacks[attack]["accuracy"] == theirs["attacks"][attack]["white"]["accuracy"]
        assert mine.attacks[attack]["mean_l2_all"] == pytest.approx(theirs["attacks"][attack]["white"]["mean_l2_all"])
        assert mine.robust[attack].tolist() == theirs["per_example"][attack]
    assert mine.robust_accuracy == theirs["autoattack"]["robust_accuracy"]
    assert mine.autoattack["accuracy_after"] == theirs["autoattack"]["accuracy_after"]
    assert mine.autoattack["worst_case"]["accuracy"] == theirs["autoattack"]["worst_case"]["accuracy"]
    assert mine.robust["autoattack"].tolist() == theirs["per_example"]["autoattack"]


@pytest.mark.slow
@pytest.mark.parametrize("make", [_tiny_model, RebuildableNet], ids=["sequential", "subclassed"])
def test_train_model_returns_the_averaged_model_whose_evaluation_gives_the_runs_numbers(tmp_path, make):
    from eval import evaluate_model
    from training import train_model
    from training.rundir import EMA_WEIGHTS_FILE

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), np.arange(64) % 4
    keras.utils.set_random_seed(0)
    given = make()
    given(np.zeros((1, 8, 8, 3), np.float32))
    before = [w.copy() for w in given.get_weights()]
    model, record = train_model(given, "fgm", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "run"), epochs=2,
                                batch_size=16, eps=np.float32(0.5), monitor_size=16, say=lambda *_: None)
    assert record.finished and record.step == 8
    for a, b in zip(before, given.get_weights()):
        np.testing.assert_array_equal(a, b)  # the model given is not changed
    saved = keras.models.clone_model(model)
    saved.load_weights(str(record.run_dir / EMA_WEIGHTS_FILE))
    for a, b in zip(model.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    result = evaluate_model(model, x[:16], y[:16], eps=0.5, attacks="fgm", **QUIET)
    last = record.epoch_records[-1]
    assert result.clean_accuracy == pytest.approx(last["test_acc"], abs=1e-9)
    assert result.attacks["fgm"]["accuracy"] == pytest.approx(last["monitor_adv_acc"], abs=1e-9)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
def test_train_model_resumes_a_stopped_run_to_the_same_weights_and_verbose_0_prints_nothing(tmp_path, capsys):
    from training import train_model
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), np.arange(64) % 3
    quiet = dict(verbose=0, epochs=2, batch_size=16, eps=0.5, pgd_steps=2, seed=4)
    keras.utils.set_random_seed(0)
    model = _tiny_model(outputs=3)
    whole = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "whole"), **quiet)
    part = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "parts"),
                       stop_after_steps=3, **quiet)
    assert capsys.readouterr().out == ""  # no lines, no progress bar
    assert part.record.step == 3 and not part.record.finished
    rest = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "parts"),
                       **{**quiet, "verbose": 1})
    said = capsys.readouterr().out
    assert "epoch 2/2" in said and "loss" in said  # its lines and Keras's progress bar
    assert rest.record.step == whole.record.step == 8
    for a, b in zip(whole.model.get_weights(), rest.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("data, match", [
    ((np.zeros((4, 8, 8, 3), np.float32) + 0.5 / 255, np.arange(4) % 3), "not multiples of 1/255"),
    ((np.zeros((4, 8, 8, 3), np.uint8), np.eye(3)[np.arange(4) % 3]), "one-hot"),
    ((np.zeros((4, 8, 8, 3), np.float32) + 2.0, np.arange(4) % 3), r"must lie in \[0, 1\]"),
    ((np.full((4, 8, 8, 3), np.nan, np.float32), np.arange(4) % 3), r"train_data holds 768 NaN"),
    ((np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64)), r"train_data holds no images"),
    ((np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 3), r"the model takes images of shape \(8, 8, 3\) but got"),
    ((np.zeros((4, 8, 8, 3), np.uint8), np.arange(4)), r"labels must lie in \[0, 2\] \(the model has 3 classes\)"),
])
def test_bad_data_to_train_model_names_the_problem(tmp_path, data, match):
    from training import train_model
    test = data if len(data[0]) else (np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 3)
    with pytest.raises(ValueError, match=match):
        train_model(_tiny_model(outputs=3), "none", data, test, run_dir=str(tmp_path / "run"), say=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, settings, match", [
    (lambda: _tiny_model(outputs=3), {"c_l": 50}, "'c_l' is not a setting of training, of the run or of --defense fgm"),
    (lambda: _tiny_model(outputs=3), {"eps": 0}, r"eps must be a number > 0 .*eps 0 would train with no attack"),
    (lambda: _tiny_model(outputs=3), {"eps": -0.5}, r"eps must be a number > 0"),
    (lambda: _tiny_model(outputs=3), {"verbose": 2}, r"verbose must be 0 \(silent\) or 1"),
    (SubclassedNet, {}, r"SubclassedNet.from_config\(model.get_config\(\)\); that failed .*\*\*kwargs"),
])
def test_bad_settings_and_models_to_train_model_are_refused_before_anything_is_written(tmp_path, model, settings,
                                                                                        match):
    from training import train_model
    x, y = np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 3
    with pytest.raises(ValueError, match=match):
        train_model(model(), "fgm", (x, y), (x, y), run_dir=str(tmp_path / "run"), say=lambda *_: None, **settings)
    assert not (tmp_path / "run").exists()
