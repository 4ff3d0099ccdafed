"""training/stderr_filter.py: TensorFlow's harmless "remapper failed" line is dropped from stderr,
every other line (a C++ error written straight to file descriptor 2 included) still shows."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = (b"E0000 00:00:1796408733.141388    3730 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: "
         b"Mutation::Apply error: fanout 'gradient_tape/classifier_1/lrelu4_1/LeakyRelu/LeakyReluGrad' exist "
         b"for missing node 'classifier_1/conv4_1/BiasAdd'.\n")
OTHER = b"E0000 00:00:1796408733.2 3730 some_kernel.cc:12] another failure: INVALID_ARGUMENT: keep me\n"


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          timeout=120, **kwargs)


def test_the_known_line_is_dropped_and_every_other_write_to_fd_2_kept_in_order():
    result = _python(f"""
        import ctypes, sys
        from training import stderr_filter
        print(stderr_filter.install(), flush=True)
        write = ctypes.CDLL(None).write  # as C++ writes: straight to file descriptor 2
        for line in ({NOISE!r}, {OTHER!r}, {NOISE!r}):
            write(2, line, len(line))
        sys.stderr.write("a Python line\\n")
        sys.stderr.write("progress 1/2\\rprogress 2/2\\r")
        sys.stderr.write("a last line without its newline")
        """)
    assert result.returncode == 0 and result.stdout == b"True\n", result.stderr
    assert result.stderr == (OTHER + b"a Python line\nprogress 1/2\rprogress 2/2\r"
                             b"a last line without its newline")


def test_what_is_written_just_before_an_abort_still_shows():
    # TensorFlow's failed CHECK prints its reason, then calls abort(): the line must not die with it.
    result = _python(f"""
        import os
        from training import stderr_filter
        stderr_filter.install()
        os.write(2, {NOISE!r} + b"F0000 check failed: the reason\\n")
        os.abort()
        """)
    assert result.returncode != 0
    assert result.stderr == b"F0000 check failed: the reason\n"


def test_a_stderr_that_is_not_file_descriptor_2_is_left_alone():
    result = _python("""
        import io, sys
        from training import stderr_filter
        sys.stderr = io.StringIO()
        print(stderr_filter.install())
        """)
    assert result.returncode == 0 and result.stdout == b"False\n", result.stderr


def test_is_known_noise_names_the_remapper_line_only():
    from training.stderr_filter import is_known_noise

    assert is_known_noise(NOISE.decode())
    assert not is_known_noise(OTHER.decode())
    assert not is_known_noise("E0000 meta_optimizer.cc:967] layout failed: INVALID_ARGUMENT: something else")


@pytest.mark.slow
def test_a_training_and_an_evaluation_through_run_py_show_no_remapper_line(tiny_folder, tmp_path):
    # run.py's own main(), followed by a C++-style error line written while the filter is in place.
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
    env["PYTHONPATH"] = str(ROOT)
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
        assert OTHER.decode() in result.stderr
