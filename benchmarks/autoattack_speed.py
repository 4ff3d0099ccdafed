"""Standard AutoAttack (this project's, attacks/autoattack.py) beside ART 1.20.1's APGD-CE and Square
on one run's EMA classifier and the same test images.

    python -m benchmarks.autoattack_speed --run_dir runs/RUN --n 256 [--norm 2 --eps 0.5]

Loads the run and its test images with benchmarks/common.py (eval.runs.load_run, float32 EMA
classifier, the --test_limit class-balanced subset), then, after a warm-up call of each contender
on a few images (tracing), times:
- this project's standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square at the original's budgets),
  printing per attack its seconds, examples attacked, forward passes and robust accuracy;
- this project's APGD-CE (100 iterations) and Square (--square_queries) alone, on all images;
- ART's AutoProjectedGradientDescent (cross-entropy, 100 iterations, 1 restart) and SquareAttack
  (--square_queries, p_init 0.8) through a TensorFlowV2Classifier, on the same images;
and prints seconds, robust accuracies and the ART / ours time ratios. ART's outputs count only
where finite and inside the ball and box, as AutoAttack counts its own.
benchmarks/torchattacks_twin.py times torchattacks' standard AutoAttack beside ours the same way.
ART's Square rescales its p schedule to its budget; ours is run with rescale_schedule=True here to
match (AutoAttack's standard Square does not rescale, as the original).
"""
from __future__ import annotations

import importlib
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import attacks  # noqa: E402
from benchmarks.common import in_threat_model, load_victim  # noqa: E402

flags.DEFINE_string("run_dir", None, "A trained run whose EMA classifier is attacked.", required=True)
flags.DEFINE_integer("n", 256, "Test images.")
flags.DEFINE_integer("batch_size", 128, "Batch size of every implementation.")
flags.DEFINE_enum("norm", "2", ["2", "inf"], "Threat model.")
flags.DEFINE_float("eps", None, "Radius; default 0.5 (L2) or 8/255 (L-inf).")
flags.DEFINE_integer("square_queries", 5000, "Square Attack's query budget (both implementations).")
flags.DEFINE_integer("seed", 0, "Seed of this project's attacks.")
flags.DEFINE_enum("only", "all", ["all", "apgd"], "apgd: APGD-CE alone (ours, ART's and the gradient floor), "
                  "without Square and the whole AutoAttack.")
FLAGS = flags.FLAGS


def _robust_accuracy(model_fn, x, y, x_adv, eps, norm):
    x_adv, valid = in_threat_model(x, x_adv, eps, norm)
    predictions = np.concatenate([np.argmax(np.asarray(model_fn(tf.constant(x_adv[i:i + FLAGS.batch_size]))), -1)
                                  for i in range(0, len(x), FLAGS.batch_size)])
    return float(np.mean((predictions == y) | ~valid))


def _correct(model_fn, x, y):
    """Per example: classified correctly (the clean flags AutoAttack starts from)."""
    return np.concatenate([np.argmax(np.asarray(model_fn(tf.constant(x[i:i + FLAGS.batch_size]))), -1)
                           for i in range(0, len(x), FLAGS.batch_size)]) == y


def _timed(fn, x, y):
    fn(x[:8], y[:8])  # warm-up: trace and compile
    started = time.perf_counter()
    out = fn(x, y)
    return time.perf_counter() - started, out


def _batched(fn):
    def run(x, y):
        return np.concatenate([np.asarray(fn(x[i:i + FLAGS.batch_size], y[i:i + FLAGS.batch_size]))
                               for i in range(0, len(y), FLAGS.batch_size)])
    return run


def _gradient_floor(model_fn, n_iter: int):
    """The least work any 100-iteration APGD-CE does: ``n_iter`` gradients of the cross-entropy with
    respect to the input, one forward and backward pass each, in one compiled loop over the batch
    (and nothing else: no step-size schedule, projection or bookkeeping)."""
    @tf.function
    def floor(xb, yb):
        def body(i, x_cur):
            with tf.GradientTape() as tape:
                tape.watch(x_cur)
                loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(yb, model_fn(x_cur),
                                                                                       from_logits=True))
            return i + 1, tf.clip_by_value(x_cur + 1e-3 * tf.sign(tape.gradient(loss, x_cur)), 0.0, 1.0)
        return tf.while_loop(lambda i, _: i < n_iter, body, (tf.constant(0), tf.convert_to_tensor(xb)))[1]
    return _batched(lambda xb, yb: floor(xb, yb))


def main(_):
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier
    import art
    import keras

    norm = np.inf if FLAGS.norm == "inf" else 2
    eps = FLAGS.eps if FLAGS.eps is not None else importlib.import_module("attacks.autoattack").DEFAULT_EPS[norm]
    victim = load_victim(FLAGS.run_dir, FLAGS.n)
    run, dataset, x, y, model, model_fn = (victim.run, victim.dataset, victim.x, victim.y, victim.model,
                                           victim.model_fn)
    classes = victim.num_classes
    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=classes, input_shape=x.shape[1:], clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def onehot(labels):
        return np.eye(classes, dtype=np.float32)[labels]

    floor = _gradient_floor(model_fn, 100)
    correct = _correct(model_fn, x, y)  # AutoAttack attacks only these
    contenders = {
        # on the examples classified correctly, the ones APGD-CE attacks (ART's attacks every example)
        ("APGD-CE", "gradient floor"): lambda xb, yb: floor(xb[correct[:len(yb)]], yb[correct[:len(yb)]]),
        ("APGD-CE", "ours"): _batched(lambda xb, yb: attacks.apgd(model_fn, xb, y=yb, eps=eps, norm=norm, n_iter=100,
                                                                  seed=FLAGS.seed)),
        ("APGD-CE", "ART"): lambda xb, yb: AutoProjectedGradientDescent(
            classifier, norm=norm, eps=eps, eps_step=2 * eps, max_iter=100, targeted=False, nb_random_init=1,
            batch_size=FLAGS.batch_size, loss_type="cross_entropy", verbose=False).generate(xb, y=onehot(yb)),
        ("Square", "ours"): _batched(lambda xb, yb: attacks.square_attack(
            model_fn, xb, y=yb, eps=eps, norm=norm, n_queries=FLAGS.square_queries, seed=FLAGS.seed)),
        ("Square", "ART"): lambda xb, yb: SquareAttack(
            classifier, norm=norm, eps=eps, max_iter=FLAGS.square_queries, p_init=0.8, nb_restarts=1,
            batch_size=FLAGS.batch_size, verbose=False).generate(xb, y=onehot(yb)),
    }
    if FLAGS.only == "apgd":
        contenders = {k: v for k, v in contenders.items() if k[0] == "APGD-CE"}
    rows = {}
    for key, fn in contenders.items():
        seconds, x_adv = _timed(fn, x, y)
        rows[key] = (seconds, float("nan") if key[1] == "gradient floor" else
                     _robust_accuracy(model_fn, x, y, x_adv, eps, norm))

    if FLAGS.only == "apgd":
        floor, ours, theirs = (rows[("APGD-CE", k)][0] for k in ("gradient floor", "ours", "ART"))
        print(f"{len(y)} test images of {dataset.name}, run {run.name}, L{FLAGS.norm} eps {eps:.5g}, batch "
              f"{FLAGS.batch_size}, ART {art.__version__}, tensorflow {tf.__version__}")
        print("| APGD-CE, 100 iterations | seconds | robust accuracy | / gradient floor |")
        print("|---|---|---|---|")
        for name, key in ((f"gradient floor (100 input gradients of the {int(correct.sum())} correct, nothing else)",
                           "gradient floor"),
                          ("this project", "ours"), (f"ART {art.__version__}", "ART")):
            seconds, accuracy = rows[("APGD-CE", key)]
            shown = "-" if key == "gradient floor" else f"{accuracy:.4f}"
            print(f"| {name} | {seconds:.1f} | {shown} | {seconds / floor:.2f}x |")
        print(f"\nART / ours: {theirs / ours:.2f}x")
        return
    attacks.autoattack(model_fn, x[:8], y[:8], eps=eps, norm=norm, batch_size=FLAGS.batch_size,
                       attack_kwargs={"apgd-ce": dict(n_iter=2), "apgd-t": dict(n_iter=2),
                                      "fab-t": dict(n_iter=2), "square": dict(n_queries=2)})  # warm-up
    started = time.perf_counter()
    result = attacks.autoattack(model_fn, x, y, eps=eps, norm=norm, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    total = time.perf_counter() - started

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; tensorflow "
          f"{tf.__version__}, ART {art.__version__}; run {run.name}, {len(y)} test images of {dataset.name}, "
          f"L{FLAGS.norm} eps {eps:.5g}, batch {FLAGS.batch_size}, Square {FLAGS.square_queries} queries")
    print("\nthis project's standard AutoAttack:")
    print("| stage | seconds | attacked | forward passes | robust accuracy |")
    print("|---|---|---|---|---|")
    for stage, accuracy in result.robust_accuracy.items():
        print(f"| {stage} | {result.seconds[stage]:.1f} | {result.attacked.get(stage, len(y))} | "
              f"{result.forward_passes[stage]} | {accuracy:.4f} |")
    print(f"| total | {total:.1f} | | {sum(result.forward_passes.values())} | {result.final_robust_accuracy:.4f} |")
    print("\nsingle attacks on all images:")
    print("| attack | implementation | seconds | robust accuracy | ART / ours seconds |")
    print("|---|---|---|---|---|")
    for attack in ("APGD-CE", "Square"):
        ours, theirs = rows[(attack, "ours")], rows[(attack, "ART")]
        print(f"| {attack} | ART {art.__version__} | {theirs[0]:.1f} | {theirs[1]:.4f} | 1 |")
        print(f"| {attack} | this project | {ours[0]:.1f} | {ours[1]:.4f} | {theirs[0] / ours[0]:.2f}x |")
    print(f"\nstandard AutoAttack vs ART's APGD-CE + Square: {total:.1f} s vs "
          f"{rows[('APGD-CE', 'ART')][0] + rows[('Square', 'ART')][0]:.1f} s")


if __name__ == "__main__":
    app.run(main)
