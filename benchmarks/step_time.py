"""Seconds per training step of each defense, measured in one run on the same model and data.

    python -m benchmarks.step_time --width 1 --gen_width 1 --batch_size 128 --steps 10

Every defense runs the loop's own compiled step (``training.loop.compiled_train_step``: the
defense's step, the EMA update, the step counter) on one fixed batch, after a warm-up that traces
and compiles it. Prints a table and the ratios the PGN paper reports (Table 2: PGN/clean 6.3,
PGN/PGD-10 0.29 on an RTX 2080 Ti). Data values do not change the cost: the batch is random
images, so no dataset is needed.
"""
from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from models import build_classifier  # noqa: E402
from training.config import DefenseConfig, TrainConfig  # noqa: E402
from training.defenses import make_defense  # noqa: E402
from training.ema import WeightEMA  # noqa: E402
from training.loop import compiled_train_step  # noqa: E402

flags.DEFINE_float("width", 1.0, "Classifier width (1: Table 1).")
flags.DEFINE_float("gen_width", 1.0, "PGN generator width (1: Table 1).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("num_classes", 10, "Classes (10: CIFAR-10, 100: CIFAR-100).")
flags.DEFINE_integer("steps", 10, "Timed steps per defense (after 2 warm-up steps).")
flags.DEFINE_integer("repeats", 3, "Timing rounds over all defenses; the median round counts.")
flags.DEFINE_list("defenses", ["none", "fgm", "pgd", "pgn", "pgn:alternating", "l2l", "rvs"], "Defenses to time.")
flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 compute.")
FLAGS = flags.FLAGS

LABELS = {"none": "clean", "fgm": "FGM", "pgd": "PGD-10", "pgn": "PGN (simultaneous)",
          "pgn:alternating": "PGN (alternating)", "l2l": "L2L", "rvs": "RvS"}


def build_step(defense_name: str, x, y):
    """defense_name: a --defense value, or pgn:alternating for PGN's other update order."""
    import keras
    keras.utils.set_random_seed(0)
    defense_name, _, update = defense_name.partition(":")
    train_cfg = TrainConfig(width=FLAGS.width, mixed_precision=FLAGS.mixed_precision)
    classifier = build_classifier(FLAGS.num_classes, x.shape[1:], FLAGS.width)
    defense = make_defense(classifier, DefenseConfig(defense=defense_name, gen_width=FLAGS.gen_width,
                                                     pgn_update=update or "simultaneous"),
                           train_cfg, tf.random.Generator.from_seed(0))
    defense.build()
    ema = WeightEMA(defense.networks, train_cfg.ema_decay)
    step = compiled_train_step(defense, ema, tf.Variable(0, dtype=tf.int64))
    for _ in range(2):
        float(step(x, y)["loss"])
    return step


def seconds_per_step(step, x, y) -> float:
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
        metrics = step(x, y)
    float(metrics["loss"])  # wait for the last step
    return (time.perf_counter() - started) / FLAGS.steps


def main(_):
    import keras
    logging.set_verbosity(logging.ERROR)  # each defense's own step function is a new trace, as intended
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 1, (FLAGS.batch_size, 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int32))
    steps = {name: build_step(name, x, y) for name in FLAGS.defenses}
    rounds = {name: [] for name in steps}
    for _ in range(FLAGS.repeats):  # interleaved, so drifts in machine load hit every defense alike
        for name, step in steps.items():
            rounds[name].append(seconds_per_step(step, x, y))
    timing = {name: float(np.median(r)) for name, r in rounds.items()}

    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, devices {devices}; "
          f"tensorflow {tf.__version__}; width {FLAGS.width:g}, gen_width {FLAGS.gen_width:g}, "
          f"batch {FLAGS.batch_size}, {FLAGS.num_classes} classes, "
          f"{'mixed_float16' if FLAGS.mixed_precision else 'float32'}")
    print("| defense | s/step | x clean |")
    print("|---|---|---|")
    clean = timing.get("none")
    for name, seconds in timing.items():
        ratio = f"{seconds / clean:.2f}" if clean else "-"
        print(f"| {LABELS.get(name, name)} | {seconds:.4f} | {ratio} |")
    if "pgn" in timing and clean:
        print(f"PGN/clean = {timing['pgn'] / clean:.2f} (paper 6.3)")
    if "pgn" in timing and "pgd" in timing:
        print(f"PGN/PGD-10 = {timing['pgn'] / timing['pgd']:.2f} (paper 0.29)")


if __name__ == "__main__":
    app.run(main)
