"""This project's CW-L2 and DeepFool against foolbox 3.3.4's, on one model and one set of images.

    python -m benchmarks.attack_speed --run_dir runs/RUN --n 256

Times each attack over the same ``--n`` test images of the run's dataset (its EMA classifier in
float32) at the paper's settings (CW-L2: 100 iterations, 5 binary-search steps, lr 5e-3, initial
constant 1e-2; DeepFool: 100 iterations, 10 candidates, overshoot 0.02), each once after a
warm-up call on a few images (tracing), and prints seconds, median L2 of the successful
perturbations and the ratios. Both attack the model's own predictions, so every image counts.
foolbox gets the model as a ``tf.function`` of itself, which makes
its eager loops about 3x faster than a bare Keras model: the fairest comparison available.
"""
from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import foolbox as fb  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import attacks  # noqa: E402
import data  # noqa: E402
from eval.runs import load_run  # noqa: E402

flags.DEFINE_string("run_dir", None, "A trained run whose EMA classifier is attacked.", required=True)
flags.DEFINE_integer("n", 256, "Test images.")
flags.DEFINE_integer("batch_size", 128, "Batch size of both implementations.")
FLAGS = flags.FLAGS

CW = dict(binary_search_steps=5, max_iterations=100, learning_rate=5e-3, initial_const=1e-2, confidence=0.0)
DEEPFOOL = dict(max_iter=100, nb_candidate=10, overshoot=0.02)


def _batched(fn, x, y):
    return np.concatenate([np.asarray(fn(tf.constant(x[i:i + FLAGS.batch_size]), tf.constant(y[i:i + FLAGS.batch_size])))
                           for i in range(0, len(y), FLAGS.batch_size)])


def _timed(fn, x, y):
    fn(tf.constant(x[:8]), tf.constant(y[:8]))  # warm-up: trace and compile
    started = time.perf_counter()
    x_adv = _batched(fn, x, y)
    return time.perf_counter() - started, x_adv


def _median_l2(model, x, y, x_adv) -> tuple[float, float]:
    # foolbox's CW returns an all-black image where it found nothing; that is not a success.
    found = np.any(np.asarray(x_adv) != 0, axis=(1, 2, 3))
    fooled = (np.argmax(model(x_adv).numpy(), axis=-1) != y) & found
    norms = np.sqrt(((x_adv - x) ** 2).reshape(len(x), -1).sum(axis=1))
    return float(np.median(norms[fooled])) if fooled.any() else float("nan"), float(fooled.mean())


def main(_):
    run = load_run(FLAGS.run_dir)
    dataset = data.load_dataset(run.data_config(test_limit=FLAGS.n))
    x = dataset.test_images.astype(np.float32) / 255.0
    y = dataset.test_labels
    model = run.build_classifier()
    model_fn = lambda images: model(images, training=False)  # noqa: E731
    fmodel = fb.TensorFlowModel(tf.function(model, reduce_retracing=True), bounds=(0, 1))
    fb_cw = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=CW["binary_search_steps"], steps=CW["max_iterations"],
                                             stepsize=CW["learning_rate"], confidence=CW["confidence"],
                                             initial_const=CW["initial_const"], abort_early=True)
    fb_df = fb.attacks.L2DeepFoolAttack(steps=DEEPFOOL["max_iter"], candidates=DEEPFOOL["nb_candidate"],
                                        overshoot=DEEPFOOL["overshoot"], loss="logits")
    predictions = np.argmax(model(x).numpy(), axis=-1)
    contenders = {
        ("CW-L2", "ours"): lambda xb, yb: attacks.carlini_wagner_l2(model_fn, xb, y=yb, batch_size=FLAGS.batch_size,
                                                                   clip_min=0.0, clip_max=1.0, **CW),
        # eagerpy under numpy 2 only compares int64 labels (np.find_common_type is gone).
        ("CW-L2", "foolbox"): lambda xb, yb: fb_cw(fmodel, xb, tf.cast(yb, tf.int64), epsilons=None)[0],
        ("DeepFool", "ours"): lambda xb, yb: attacks.deepfool(model_fn, xb, clip_min=0.0, clip_max=1.0, **DEEPFOOL),
        ("DeepFool", "foolbox"): lambda xb, yb: fb_df(fmodel, xb, fb.criteria.Misclassification(tf.cast(yb, tf.int64)),
                                                    epsilons=None)[0],
    }
    rows = {}
    for (attack, who), fn in contenders.items():
        # Both attacks move every image off the model's own prediction: a median over examples
        # the model already gets wrong (norm ~0 for CW with true labels) would hide differences.
        seconds, x_adv = _timed(fn, x, predictions.astype(np.int32))
        rows[(attack, who)] = (seconds, *_median_l2(model, x, predictions, x_adv))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}, "
          f"foolbox {fb.__version__}; run {run.name} (width {run.settings['train.width']:g}), "
          f"{len(y)} test images of {dataset.name}, batch {FLAGS.batch_size}")
    print("| attack | implementation | seconds | median L2 | success | speed-up | median L2 ratio |")
    print("|---|---|---|---|---|---|---|")
    for attack in ("CW-L2", "DeepFool"):
        ours, theirs = rows[(attack, "ours")], rows[(attack, "foolbox")]
        for who, row in (("foolbox 3.3.4", theirs), ("this project", ours)):
            extra = (f"{theirs[0] / ours[0]:.2f}x | {ours[1] / theirs[1]:.4f}" if row is ours else "1 | 1")
            print(f"| {attack} | {who} | {row[0]:.1f} | {row[1]:.4f} | {row[2]:.3f} | {extra} |")


if __name__ == "__main__":
    app.run(main)
