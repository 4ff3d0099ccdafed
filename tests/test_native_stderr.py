"""TensorFlow's stderr: grappler's "remapper failed" line prevented at its cause (models/leaky_relu.py),
and the one helper that holds back what C libraries write to file descriptor 2 (training/native_stderr.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHER = b"E0000 00:00:1796408733.2 3730 some_kernel.cc:12] another failure: INVALID_ARGUMENT: keep me\n"
# oneDNN's graph rewrites, on by default only on CPUs with AVX-512: forced on, the remapper tries the
# fusion that fails on any x86 CPU, so these tests mean the same everywhere.
ONEDNN = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def _python(code: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "PYTHONPATH": str(ROOT),
           **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          timeout=300, cwd=ROOT, **kwargs)


def test_held_back_drops_or_shows_what_c_code_wrote_by_the_rule_given():
    result = _python(f"""
        import ctypes, sys
        from training import native_stderr
        write = ctypes.CDLL(None).write  # as C++ writes: straight to file descriptor 2
        with native_stderr.held_back(show=lambda error: False):
            write(2, b"dropped\\n", 8)
        print("between", file=sys.stderr, flush=True)
        with native_stderr.held_back():
            write(2, {OTHER!r}, {len(OTHER)})
        try:
            with native_stderr.held_back(show=lambda error: isinstance(error, KeyError)):
                write(2, b"shown: the block failed\\n", 24)
                raise KeyError("x")
        except KeyError:
            pass
        sys.stderr.write("a Python line\\n")
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"between\n" + OTHER + b"shown: the block failed\na Python line\n"


def test_the_leaky_relus_gradient_is_keras_own_bit_for_bit():
    import keras
    import tensorflow as tf

    from models.leaky_relu import LeakyReLU

    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16"):
        x = tf.constant(np.concatenate([rng.normal(size=1000), [0.0, -0.0, 1e-45, -1e-45, 1e-8, -1e-8]]), dtype)
        upstream = tf.constant(rng.normal(size=x.shape[0]), dtype)
        grads, values = [], []
        for layer in (keras.layers.LeakyReLU(negative_slope=0.2, dtype=dtype),
                      LeakyReLU(negative_slope=0.2, dtype=dtype)):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            values.append(y.numpy())
            grads.append(tape.gradient(y, x, output_gradients=upstream).numpy())
        assert np.array_equal(values[0], values[1]) and np.array_equal(grads[0], grads[1]), dtype


def test_the_remapper_line_comes_from_keras_leaky_relu_after_a_convolution_and_not_from_ours():
    # The cause: LeakyReluGrad reads the activation's input, the BiasAdd that the remapper's
    # Conv2D + BiasAdd + LeakyRelu fusion deletes. The same graph with models.leaky_relu fuses cleanly.
    result = _python("""
        import sys
        import keras, numpy as np, tensorflow as tf
        from models import classifier

        x = tf.constant(np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
        for name in ("ours", "keras"):
            if name == "keras":
                classifier.LeakyReLU = keras.layers.LeakyReLU
            model = classifier.build_classifier(3, (16, 16, 3), width=0.125)

            @tf.function
            def input_gradient(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(model(x))
                return tape.gradient(loss, x)
            input_gradient(x)
            print(f"after {name}", file=sys.stderr, flush=True)
        """, env={**ONEDNN, "TF_CPP_MIN_LOG_LEVEL": "2"}, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    ours, keras_part = result.stderr.split("after ours\n")
    assert "remapper failed" not in ours
    assert "remapper failed" in keras_part and "LeakyReluGrad" in keras_part  # the cause, shown


@pytest.mark.slow
def test_a_training_and_an_evaluation_through_run_py_show_no_remapper_line(tiny_folder, tmp_path):
    # run.py's own main(), followed by a C++-style error line: stderr is the terminal's, unfiltered.
    wrapper = textwrap.dedent(f"""
        import ctypes, sys
        import run
        from absl import app

        def main(argv):
            try:
                run.main(argv)
            finally:
                ctypes.CDLL(None).write(2, {OTHER!r}, {len(OTHER)})

        app.run(main, flags_parser=run._parse_flags)
        """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # run.py's default: errors show
    env.update(ONEDNN, PYTHONPATH=str(ROOT))
    run_dir = tmp_path / "run"
    commands = [["--mode", "train", "--defense", "pgn", "--preset", "smoke", "--dataset", f"folder:{tiny_folder}",
                 "--data_dir", str(tmp_path / "tfds"), "--batch_size", "32", "--train_limit", "0",
                 "--test_limit", "0", "--run_dir", str(run_dir)],
                ["--mode", "eval", "--run_dir", str(run_dir), "--attacks", "fgm", "--test_limit", "0",
                 "--eval_dir", str(tmp_path / "eval")]]
    for args in commands:
        result = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "remapper failed" not in result.stderr
        assert result.stderr.endswith(OTHER.decode())
