"""Command line: adversarial training with perturbation generator networks and its baselines.

    python run.py --mode train --defense pgd --dataset folder:../shared/data/cifar10-jpeg --preset cpu

Bad input (an unknown flag value, a run directory holding other settings, data that cannot be
found) ends with one line on stderr and exit code 2, before anything is written.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from absl import app, flags, logging  # noqa: E402

from configs import PRESETS  # noqa: E402
from training.config import DEFENSE_NAMES, PGN_GRADS, PGN_UPDATES  # noqa: E402

MODES = ("train",)
EXIT_BAD_INPUT = 2

FLAGS = flags.FLAGS
_LIBRARY_FLAGS = frozenset(FLAGS)  # absl's own (--logtostderr, ...), left out of config.json
flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_enum("preset", None, sorted(PRESETS), "Named settings (configs/presets.py); explicit flags win.")
# Data
flags.DEFINE_string("dataset", "cifar10",
                    "cifar10, cifar100, svhn_cropped, mnist (tensorflow-datasets) or folder:PATH "
                    "(PATH/{train,test}/<class>/*).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir holding a prepared copy.")
flags.DEFINE_integer("train_limit", 0, "Train on a deterministic class-balanced subset of this size (0: all).")
flags.DEFINE_integer("test_limit", 0, "Evaluate on a deterministic class-balanced subset of this size (0: all).")
flags.DEFINE_enum("augment", "auto", ["auto", "none", "shift", "flip_shift"],
                  "auto: random flip + 4 px shift for CIFAR and folders, shift only for digits.")
# Optimisation (Table 1 defaults)
flags.DEFINE_integer("epochs", 200, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("lr", 5e-4, "Adam learning rate.")
flags.DEFINE_float("ema_decay", 0.998, "Decay of the weight average that is evaluated.")
flags.DEFINE_boolean("ema_warmup", True, "Ramp the EMA decay up as (1+t)/(10+t) (tf.train.ExponentialMovingAverage).")
flags.DEFINE_float("width", 1.0, "Multiplier of the classifier's filter counts (0.25 for CPU runs).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order, augmentation and random starts.")
flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 compute (GPU only: ~9x slower on CPU).")
# Defense
flags.DEFINE_enum("defense", "pgn", DEFENSE_NAMES, "Training method: none (clean), fgm, pgd, pgn (the paper).")
flags.DEFINE_float("eps", 0.5, "L2 radius of the FGM/PGD training perturbations (pixels in [0, 1]).")
flags.DEFINE_integer("pgd_steps", 10, "PGD iterations (step eps/steps*5/3, random start).")
flags.DEFINE_float("adv_coeff", 1.0, "a in (1-a) CE(x) + a CE(x_adv).")
flags.DEFINE_float("c_l", 50.0, "PGN: weight of the generator's ||delta||^2 penalty (eq. 4); lower is stronger.")
flags.DEFINE_enum("pgn_grad", "prob", PGN_GRADS, "PGN: G's gradient input is d/dx of F(x)_y (prob) or of the CE (loss).")
flags.DEFINE_enum("pgn_update", "simultaneous", PGN_UPDATES,
                  "PGN: both updates from one forward pass, or generator step then classifier step.")
flags.DEFINE_string("pgn_inputs", "grad,image,label", "PGN: generator inputs (Appendix D ablation: any subset).")
flags.DEFINE_float("gen_width", 1.0, "PGN: multiplier of the generator's filter and unit counts.")
# Run directory and reporting
flags.DEFINE_string("run_dir", None, "Run directory (default runs/<dataset>-<defense>-w<width>-seed<seed>); "
                    "an existing run with the same settings is resumed.")
flags.DEFINE_boolean("overwrite", False, "Move an existing --run_dir aside and start afresh.")
flags.DEFINE_integer("log_every_steps", 50, "TensorBoard / metrics.jsonl cadence in steps.")
flags.DEFINE_float("checkpoint_every_minutes", 10.0, "Checkpoint this often within an epoch (0: epoch ends only).")
flags.DEFINE_integer("monitor_size", 512, "Test examples attacked with the training attack each epoch.")
flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept in <run_dir>/checkpoints.")
flags.DEFINE_integer("stop_after_steps", 0, "Save and stop once this many steps are done (0: never).")


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(str(err).splitlines()[0])


def _fail(message: str, code: int = EXIT_BAD_INPUT):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextlib.contextmanager
def _quiet_stderr():
    """Hides what TensorFlow's C++ runtime prints while it loads (oneDNN and CUDA probes) unless
    TF_CPP_MIN_LOG_LEVEL asks for it, so that the terminal shows our messages; if loading fails,
    what was hidden is shown after all."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load_tensorflow() -> None:
    with _quiet_stderr():
        import tensorflow as tf
        tf.config.list_physical_devices()  # probes CUDA now, while stderr is quiet


def _value(name: str):
    """The flag's value: from the command line if given there, else the preset's, else the default."""
    if FLAGS.preset and not FLAGS[name].present and name in PRESETS[FLAGS.preset]:
        return PRESETS[FLAGS.preset][name]
    return FLAGS[name].value


def _configs():
    import data
    from training.config import DefenseConfig, RunConfig, TrainConfig

    def build(cls):
        return cls(**{f.name: _value(f.name) for f in cls.__dataclass_fields__.values()})

    return build(data.DataConfig), build(TrainConfig), build(DefenseConfig), build(RunConfig)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected argument {argv[1]!r}: every setting is a --flag (see --help)")
    logging.set_verbosity(logging.ERROR)  # tfds warns about every unprepared folder it probes
    _load_tensorflow()
    from training.loop import TrainingError, train

    used_flags = {name: _value(name) for name in FLAGS if name not in _LIBRARY_FLAGS}
    try:
        result = train(*_configs(), flags=used_flags)
    except TrainingError as err:
        _fail(str(err), code=1)
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        sys.exit(130)
    state = "finished" if result.finished else "stopped"
    print(f"{state} at step {result.step}/{result.total_steps}; run directory {result.run_dir}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
