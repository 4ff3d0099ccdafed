"""The Python API on a user's own Keras model: the README's snippets as written, and bad arguments."""
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


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_the_two_api_snippets():
    snippets = readme_snippets()
    assert any("evaluate_model(" in s for s in snippets) and any("train_model(" in s for s in snippets)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["evaluate_model(", "train_model("])
def test_each_readme_snippet_runs_as_written(tmp_path, which):
    snippet = next(s for s in readme_snippets() if which in s)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
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


def _tiny_model(outputs=3, softmax=False):
    layers = [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(outputs)]
    if softmax:
        layers.append(keras.layers.Softmax())
    return keras.Sequential(layers)


class SubclassedNet(keras.Model):
    """A model with no input_shape until called: the evaluation API must not need one."""

    def __init__(self):
        super().__init__()
        self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.dense(self.flat(x))


def _xy(n=12):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 8, 8, 3)).astype(np.float32), np.arange(n) % 3


@pytest.mark.parametrize("change, match", [
    (lambda x, y, kw: (x * 255, y, kw), r"x must lie in \[0, 1\], got values from .* to 2"),
    (lambda x, y, kw: (x, np.eye(3)[y], kw), r"y must be integer labels of shape \[N\].*one-hot"),
    (lambda x, y, kw: (x, y[:-1], kw), r"x has 12 images but y has 11 labels"),
    (lambda x, y, kw: (x, y, {**kw, "eps": 0.0}), r"eps must be a number > 0"),
    (lambda x, y, kw: (x, y, {**kw, "eps": -1}), r"eps must be a number > 0"),
    (lambda x, y, kw: (x[0], y, kw), r"x must be images \[N, H, W, C\]"),
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


@pytest.mark.slow
def test_a_subclassed_model_without_input_shape_is_evaluated():
    from eval import evaluate_model
    x, y = _xy()
    model = SubclassedNet()
    result = evaluate_model(model, x, y, eps=0.5, attacks=("autoattack", "fgm"), version="custom",
                            autoattack_attacks=("apgd-ce",), autoattack_iters=5)
    assert result.n == 12 and 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
    assert result.attacks["fgm"]["accuracy"] <= result.clean_accuracy


@pytest.mark.slow
def test_train_model_resumes_a_stopped_run_to_the_same_weights(tmp_path):
    from training import train_model
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), np.arange(64) % 3
    quiet = dict(say=lambda *_: None, epochs=2, batch_size=16, eps=0.5, pgd_steps=2, seed=4)
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    whole = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "whole"), **quiet)
    part = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "parts"),
                       stop_after_steps=3, **quiet)
    assert part.step == 3 and not part.finished
    rest = train_model(model, "pgd", (x, y), (x[:16], y[:16]), run_dir=str(tmp_path / "parts"), **quiet)
    assert rest.step == whole.step == 8
    import h5py

    def weights(run):
        with h5py.File(run / "ema_classifier.weights.h5") as f:
            out = []
            f.visititems(lambda name, item: out.append(item[()]) if isinstance(item, h5py.Dataset) else None)
            return out
    for a, b in zip(weights(tmp_path / "whole"), weights(tmp_path / "parts")):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("data, match", [
    ((np.zeros((4, 8, 8, 3), np.float32) + 0.5 / 255, np.arange(4) % 3), "not multiples of 1/255"),
    ((np.zeros((4, 8, 8, 3), np.uint8), np.eye(3)[np.arange(4) % 3]), "one-hot"),
    ((np.zeros((4, 8, 8, 3), np.float32) + 2.0, np.arange(4) % 3), r"must lie in \[0, 1\]"),
])
def test_bad_data_to_train_model_names_the_problem(tmp_path, data, match):
    from training import train_model
    with pytest.raises(ValueError, match=match):
        train_model(_tiny_model(), "none", data, data, run_dir=str(tmp_path / "run"), say=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_a_setting_of_another_defense_is_refused_by_train_model(tmp_path):
    from training import train_model
    x, y = np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 3
    with pytest.raises(ValueError, match="'c_l' is not a setting of training, of the run or of --defense fgm"):
        train_model(_tiny_model(), "fgm", (x, y), (x, y), run_dir=str(tmp_path / "run"), c_l=50)
