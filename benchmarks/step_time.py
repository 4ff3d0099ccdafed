"""The speed table: seconds per training step of each defense, the input pipeline's rate and
peak memory, measured in one run on the same model and data.

    python -m benchmarks.step_time --width 1 --gen_width 1 --batch_size 128 --steps 10
    python -m benchmarks.step_time --width 0.5 --gen_width 0.5 --precision float32,mixed_bfloat16

Every defense runs the loop's own compiled step (``training.loop.compiled_train_step``: the
defense's step, the EMA update, the step counter) on one fixed batch, after a warm-up that traces
and compiles it. Prints a table and the ratios the PGN paper reports (Table 2: PGN/clean 6.3,
PGN/PGD-10 0.29 on an RTX 2080 Ti). Data values do not change the cost: the batch is random
images, so no dataset is needed. ``--precision`` takes one or more compute policies: each defense is
built and timed under each, in the same interleaved rounds, and the table gets a column per policy.

The input pipeline (``data.train_batches``: shuffled, flipped and shifted batches of uint8 images
held in memory, as training uses it) is timed alone over one epoch of ``--pipeline_examples``
images; it should deliver at least 5x the examples per second of the clean step, or it would
slow training down. Peak memory: on a GPU, the device's peak while each defense steps
(``tf.config.experimental.get_memory_info``, reset per defense); on a CPU, the process's peak
resident memory after each defense (it only grows, so a row is at least the row above).
"""
from __future__ import annotations

import os
import platform
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import data  # noqa: E402
from models import build_classifier  # noqa: E402
from training.config import PRECISIONS, DefenseConfig, TrainConfig  # noqa: E402
from training.defenses import SETTINGS, make_defense, title  # noqa: E402
from training.defenses.settings import declared_fields  # noqa: E402
from training.ema import WeightEMA  # noqa: E402
from training.loop import compiled_train_step  # noqa: E402

flags.DEFINE_float("width", 1.0, "Classifier width (1: Table 1).")
flags.DEFINE_float("gen_width", 1.0, "PGN generator width (1: Table 1).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("num_classes", 10, "Classes (10: CIFAR-10, 100: CIFAR-100).")
flags.DEFINE_integer("steps", 10, "Timed steps per defense (after 2 warm-up steps).")
flags.DEFINE_integer("repeats", 3, "Timing rounds over all defenses; the median round counts.")
# Every registered defense at its defaults, then the variants its declaration names (PGN's update order,
# L2L's attacker sizes, ...).
ALL_DEFENSES = [row for name, cls in SETTINGS.items() for row in (name, *(f"{name}:{v}" for v in cls.benchmark_variants))]
flags.DEFINE_list("defenses", ALL_DEFENSES, "Defenses to time: NAME or NAME:SETTING=VALUE[+SETTING=VALUE] "
                  "(NAME:VALUE for the one setting of NAME that has VALUE among its choices, e.g. pgn:alternating).")
flags.DEFINE_list("precision", ["float32"], f"Compute policies to time, comma-separated: {', '.join(PRECISIONS)}.")
flags.DEFINE_integer("pipeline_examples", 20000, "Images in the input-pipeline timing (0: skip it).")
FLAGS = flags.FLAGS


def variant(spec: str) -> tuple[str, dict]:
    """``"pgn:pgn_update=alternating"`` (or ``"pgn:alternating"``) -> ("pgn", {"pgn_update": "alternating"})."""
    name, _, rest = spec.partition(":")
    settings = {}
    for part in filter(None, rest.split("+")):
        key, sep, value = part.partition("=")
        if not sep:  # a bare value: the setting whose choices hold it
            keys = [f.name for f in declared_fields(SETTINGS[name]) if part in (f.metadata["choices"] or ())]
            if len(keys) != 1:
                raise app.UsageError(f"--defenses {spec}: '{part}' is not one choice of one {name} setting")
            key, value = keys[0], part
        field = next(f for f in declared_fields(SETTINGS[name]) if f.name == key)
        settings[key] = field.metadata["kind"](value)
    return name, settings


def label(spec: str) -> str:
    """The table's row name: the defense's title, and the variant's values."""
    name, settings = variant(spec)
    return title(name) + (f" ({', '.join(map(str, settings.values()))})" if settings else "")


def build_step(defense_name: str, x, y, precision: str = "float32"):
    """defense_name: a --defense value, or NAME:SETTING=VALUE for one of its variants. The
    networks are built under ``precision``'s policy (a layer keeps the policy it was built with)."""
    import keras
    keras.utils.set_random_seed(0)
    defense_name, settings = variant(defense_name)
    train_cfg = TrainConfig(width=FLAGS.width, precision=precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        classifier = build_classifier(FLAGS.num_classes, x.shape[1:], FLAGS.width)
        cfg = DefenseConfig(defense_name, gen_width=FLAGS.gen_width, **settings)
        cfg.validate()
        defense = make_defense(classifier, cfg, train_cfg, tf.random.Generator.from_seed(0))
        defense.build()
        ema = WeightEMA(defense.networks, train_cfg.ema_decay)
        step = compiled_train_step(defense, ema, tf.Variable(0, dtype=tf.int64))
        for _ in range(2):
            float(step(x, y)["loss"])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return step


def seconds_per_step(step, x, y) -> float:
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
        metrics = step(x, y)
    float(metrics["loss"])  # wait for the last step
    return (time.perf_counter() - started) / FLAGS.steps


def pipeline_examples_per_second(batch_size: int) -> float:
    """Examples per second of one augmented epoch of the training pipeline alone (after one warm-up batch)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (FLAGS.pipeline_examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, FLAGS.num_classes, FLAGS.pipeline_examples).astype(np.int32)
    batches = iter(data.train_batches(images, labels, batch_size=batch_size, seed=0, epoch=0, augment="flip_shift"))
    next(batches)
    started, count = time.perf_counter(), 0
    for x, _ in batches:
        count += int(x.shape[0])
    return count / (time.perf_counter() - started)


def peak_memory_mib() -> float:
    """The GPU's peak since the last reset, or the process's peak resident memory on a CPU."""
    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory() -> None:
    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def _precisions() -> list[str]:
    names = list(FLAGS.precision)
    unknown = sorted(set(names) - set(PRECISIONS))
    if unknown:
        raise app.UsageError(f"--precision {','.join(unknown)}: choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(names))


def main(_):
    logging.set_verbosity(logging.ERROR)  # each defense's own step function is a new trace, as intended
    precisions = _precisions()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 1, (FLAGS.batch_size, 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int32))
    steps, memory = {}, {}
    for name in FLAGS.defenses:
        for precision in precisions:
            reset_peak_memory()
            steps[name, precision] = build_step(name, x, y, precision)  # includes two steps
            memory[name, precision] = peak_memory_mib()
    rounds = {key: [] for key in steps}
    for _ in range(FLAGS.repeats):  # interleaved, so drifts in machine load hit every defense alike
        for key, step in steps.items():
            rounds[key].append(seconds_per_step(step, x, y))
    timing = {key: float(np.median(r)) for key, r in rounds.items()}

    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, devices {devices}; "
          f"tensorflow {tf.__version__}; width {FLAGS.width:g}, gen_width {FLAGS.gen_width:g}, "
          f"batch {FLAGS.batch_size}, {FLAGS.num_classes} classes, {', '.join(precisions)}")
    where = "GPU peak" if tf.config.list_logical_devices("GPU") else "process peak RSS"
    columns = [f"s/step {p} | x clean {p}" for p in precisions]
    if len(precisions) > 1:
        columns += [f"{precisions[0]} / {p}" for p in precisions[1:]]
    print(f"| defense | {' | '.join(columns)} | examples/s {precisions[-1]} | {where} (MiB) |")
    print("|---|" + "---|" * (2 * len(precisions) + len(precisions) - 1 + 2))
    for name in FLAGS.defenses:
        cells = []
        for p in precisions:
            clean = timing.get(("none", p))
            cells += [f"{timing[name, p]:.4f}", f"{timing[name, p] / clean:.2f}" if clean else "-"]
        cells += [f"{timing[name, precisions[0]] / timing[name, p]:.2f}x" for p in precisions[1:]]
        print(f"| {label(name)} | {' | '.join(cells)} | {FLAGS.batch_size / timing[name, precisions[-1]]:.0f} "
              f"| {memory[name, precisions[-1]]:.0f} |")
    for p in precisions:
        _paper_ratios({name: timing[name, q] for name, q in timing if q == p}, p)
    if FLAGS.pipeline_examples:
        clean = timing.get(("none", precisions[-1]))
        rate = pipeline_examples_per_second(FLAGS.batch_size)
        versus = f" = {rate / (FLAGS.batch_size / clean):.1f}x the clean step's rate (goal >= 5x)" if clean else ""
        print(f"input pipeline alone (flip + shift, batch {FLAGS.batch_size}): {rate:.0f} examples/s{versus}")


def _paper_ratios(timing: dict, precision: str) -> None:
    clean = timing.get("none")
    if "pgn" in timing and clean:
        print(f"{precision}: PGN/clean = {timing['pgn'] / clean:.2f} (paper 6.3; goal <= 3.5)")
    if "pgd" in timing and clean:
        print(f"{precision}: PGD-10/clean = {timing['pgd'] / clean:.2f} (paper 21.5; about 7.7 from counting passes)")
    if "pgn" in timing and "pgd" in timing:
        print(f"{precision}: PGN/PGD-10 = {timing['pgn'] / timing['pgd']:.2f} (paper 0.29)")


if __name__ == "__main__":
    app.run(main)
