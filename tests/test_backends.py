"""AutoAttack on every Keras 3 backend (docs/backends.md): the keras.ops attacks give the same robust
accuracy, image for image, on TensorFlow and JAX for the same model and images; under JAX the
attacks import no TensorFlow; docs/backends.md's snippet runs as written; PyTorch where installed."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from backend_worker import SETTINGS, tiny_model_and_images  # noqa: E402

pytestmark = pytest.mark.xdist_group("test_backends")  # one worker: its module fixtures are made once


def run_backend(backend, tmp_path, *args):
    out = tmp_path / f"{backend}-{'-'.join(args) or 'default'}.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_worker.py"), str(out), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def tensorflow_and_jax(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backends")
    return run_backend("tensorflow", tmp, "keras"), run_backend("jax", tmp)


@pytest.mark.slow
def test_tensorflow_and_jax_give_the_same_robust_examples(tensorflow_and_jax):
    tf_run, jax_run = tensorflow_and_jax
    assert str(tf_run["backend"]) == "tensorflow" and str(jax_run["backend"]) == "jax"
    assert str(tf_run["implementation"]) == str(jax_run["implementation"]) == "keras"
    # Same random draws (NumPy on the host) and the same algorithm: every stage's robust flags agree image
    # for image (measured: 0 of 24 differ). Tolerance: one image. XLA and TensorFlow's kernels sum in
    # different orders (logits agree to ~1e-6), and a gradient entry that is ~0 can take the other sign,
    # after which that image's iterates, and on a borderline image its verdict, part ways.
    differ = np.sum(np.any(tf_run["stages"] != jax_run["stages"], axis=0))
    assert differ <= 1, (tf_run["stages"].astype(int), jax_run["stages"].astype(int))
    assert 0 < tf_run["robust"].sum() < len(tf_run["robust"])  # the attacks break some images, not all
    same = np.all(tf_run["stages"] == jax_run["stages"], axis=0)
    np.testing.assert_allclose(tf_run["x_adv"][same], jax_run["x_adv"][same], atol=1e-3)
    np.testing.assert_allclose(tf_run["fgm"], jax_run["fgm"], atol=1e-4)
    np.testing.assert_array_equal(tf_run["passes"], jax_run["passes"])  # images evaluated, per stage


@pytest.mark.slow
def test_under_jax_the_attacks_import_no_tensorflow(tensorflow_and_jax):
    assert not bool(tensorflow_and_jax[1]["tensorflow_loaded"])


@pytest.mark.slow
def test_the_tensorflow_attacks_and_the_keras_ops_ones_agree_on_robust_accuracy():
    """On TensorFlow the default is the tf.function attacks; their random starts come from TensorFlow's
    stateless RNG, the keras.ops ones' from NumPy, so they agree in robust accuracy within an image
    or two rather than image for image."""
    import attacks

    model, x, y = tiny_model_and_images()
    native = attacks.autoattack(model, x, y, **SETTINGS)
    portable = attacks.autoattack(model, x, y, implementation="keras", **SETTINGS)
    assert native.implementation == "tensorflow" and portable.implementation == "keras"
    np.testing.assert_array_equal(native.clean_correct, portable.clean_correct)
    assert abs(int(native.robust.sum()) - int(portable.robust.sum())) <= 2
    for result in (native, portable):
        assert result.max_perturbation <= SETTINGS["eps"] + 1e-5


def test_keras_ops_attacks_stay_in_the_ball_and_the_box_and_eps_zero_returns_x():
    from attacks.keras_ops import apgd, fab, fgm, square

    model, x, y = tiny_model_and_images(6)
    for norm, eps in ((2, 0.3), (np.inf, 0.03)):
        for x_adv in (apgd.apgd(model, x, y=y, eps=eps, norm=norm, n_iter=3),
                      fab.fab_targeted(model, x, y=y, eps=eps, norm=norm, n_iter=3, n_target_classes=1),
                      square.square_attack(model, x, y=y, eps=eps, norm=norm, n_queries=10),
                      fgm.projected_gradient_descent(model, x, eps, eps / 4, 3, norm, rand_init=True)):
            delta = (x_adv - x).reshape(len(x), -1)
            size = np.abs(delta).max(1) if norm == np.inf else np.sqrt((delta ** 2).sum(1))
            assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
            assert size.max() <= eps + 1e-5 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    np.testing.assert_array_equal(apgd.apgd(model, x, y=y, eps=0.0, n_iter=3), x)
    np.testing.assert_array_equal(fgm.fast_gradient_method(model, x, 0.0, 2), x)
    with pytest.raises(ValueError, match="norm"):
        apgd.apgd(model, x, eps=0.1, norm=1)


@pytest.mark.slow
def test_the_backends_page_snippet_runs_as_written_under_jax(tmp_path):
    page = (ROOT / "docs" / "backends.md").read_text()
    snippet = next(s for s in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "evaluate_model(" in s)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("jax ")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (optional: pip install torch runs the attacks on KERAS_BACKEND=torch)")
def test_pytorch_gives_the_same_robust_examples_as_tensorflow(tensorflow_and_jax, tmp_path):
    torch_run = run_backend("torch", tmp_path)
    differ = np.sum(np.any(tensorflow_and_jax[0]["stages"] != torch_run["stages"], axis=0))
    assert differ <= 1
