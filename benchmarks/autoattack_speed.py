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
and prints seconds, robust accuracies and the ART / ours time ratios; then (--only all or backends)
APGD-CE and the standard AutoAttack on every backend from this one run: TensorFlow's tf.function
attacks, the keras.ops attacks on TensorFlow, and the keras.ops attacks on JAX (a subprocess with
KERAS_BACKEND=jax given the same weights and images), each beside its backend's gradient floor,
each after an identical untimed warm-up call (JAX compiles per batch shape). ART's outputs count only
where finite and inside the ball and box, as AutoAttack counts its own.
benchmarks/torchattacks_twin.py times torchattacks' standard AutoAttack beside ours the same way.
ART's Square rescales its p schedule to its budget; ours is run with rescale_schedule=True here to
match (AutoAttack's standard Square does not rescale, as the original).
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
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
flags.DEFINE_enum("only", "all", ["all", "apgd", "backends"],
                  "apgd: APGD-CE alone (ours, ART's and the gradient floor), without Square and the whole AutoAttack; "
                  "backends: only the TensorFlow / JAX table (APGD-CE and the standard AutoAttack).")
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


def _apgd_all(apgd, model_fn, x, y, eps, norm):
    """APGD-CE (100 iterations) on every image, in batches."""
    return np.concatenate([np.asarray(apgd(model_fn, x[i:i + FLAGS.batch_size], y=y[i:i + FLAGS.batch_size], eps=eps,
                                           norm=norm, n_iter=100, seed=FLAGS.seed))
                           for i in range(0, len(y), FLAGS.batch_size)])


def _twice(fn):
    """Seconds of fn's second call (the first, identical, traces and compiles), and its result."""
    fn()
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _backend_row(name, floor_s, apgd_s, apgd_acc, aa_s, aa_acc):
    return dict(name=name, floor=floor_s, apgd=apgd_s, apgd_acc=apgd_acc, aa=aa_s, aa_acc=aa_acc)


def _measure_backend(model_fn, x, y, eps, norm, implementation, floor_fn):
    """APGD-CE, its gradient floor and the standard AutoAttack with one implementation, warm."""
    apgd = (attacks.apgd if implementation == "tensorflow" else
            importlib.import_module("attacks.keras_ops.apgd").apgd)
    correct = np.argmax(np.concatenate([np.asarray(model_fn(x[i:i + FLAGS.batch_size]))
                                        for i in range(0, len(x), FLAGS.batch_size)]), -1) == y
    floor_s, _ = _twice(lambda: floor_fn(x[correct], y[correct]))
    apgd_s, x_adv = _twice(lambda: _apgd_all(apgd, model_fn, x, y, eps, norm))
    aa_s, result = _twice(lambda: attacks.autoattack(model_fn, x, y, eps=eps, norm=norm, batch_size=FLAGS.batch_size,
                                                     seed=FLAGS.seed, implementation=implementation))
    apgd_acc = float(np.mean(np.argmax(np.concatenate([np.asarray(model_fn(x_adv[i:i + FLAGS.batch_size]))
                                                       for i in range(0, len(x), FLAGS.batch_size)]), -1) == y))
    return floor_s, apgd_s, apgd_acc, aa_s, result


def _jax_floor(model, n_iter):
    """The JAX gradient floor: ``n_iter`` input gradients of the cross-entropy through
    ``model.stateless_call`` in one jitted loop over the batch, a sign step each (as _gradient_floor)."""
    import jax
    import jax.numpy as jnp

    def loss(x, y, trainable, non_trainable):
        logits = model.stateless_call(trainable, non_trainable, x, training=False)[0]
        return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=-1))

    grad = jax.grad(loss)

    @jax.jit
    def floor(x, y, trainable, non_trainable):
        def body(_, x_cur):
            return jnp.clip(x_cur + 1e-3 * jnp.sign(grad(x_cur, y, trainable, non_trainable)), 0.0, 1.0)
        return jax.lax.fori_loop(0, n_iter, body, x)

    def run(xb, yb):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return np.asarray(floor(jnp.asarray(xb), jnp.asarray(yb.astype(np.int32)), trainable, non_trainable))
    return _batched(run)


def _jax_worker(payload_path, out_path):
    """Under KERAS_BACKEND=jax: the classifier rebuilt with the TensorFlow process's weights, then
    APGD-CE, its floor and the standard AutoAttack with the keras.ops attacks; writes a JSON row."""
    import json

    import jax
    import keras

    from models import build_classifier

    payload = np.load(payload_path)
    keras.mixed_precision.set_global_policy("float32")
    model = build_classifier(int(payload["classes"]), tuple(payload["x"].shape[1:]), float(payload["width"]))
    model.set_weights([payload[f"w{i}"] for i in range(int(payload["n_weights"]))])
    FLAGS(["worker", "--run_dir=-", f"--batch_size={int(payload['batch_size'])}", f"--seed={int(payload['seed'])}"])
    norm = np.inf if str(payload["norm"]) == "inf" else 2
    x, y = payload["x"], payload["y"]
    floor_s, apgd_s, apgd_acc, aa_s, result = _measure_backend(model, x, y, float(payload["eps"]), norm, "keras",
                                                               _jax_floor(model, 100))
    row = _backend_row(f"JAX {jax.__version__}, keras.ops attacks", floor_s, apgd_s, apgd_acc, aa_s,
                       result.final_robust_accuracy)
    row["robust"] = result.robust.tolist()
    with open(out_path, "w") as f:
        json.dump(row, f)


def _backends_table(victim, eps, norm):
    """TensorFlow (both implementations) and JAX, from this one run, each with its gradient floor."""
    import json
    import subprocess
    import sys
    import tempfile

    model_fn, x, y = victim.model_fn, victim.x, victim.y
    floor = _gradient_floor(model_fn, 100)
    rows, robust = [], {}
    for implementation, label in (("tensorflow", "tf.function attacks"), ("keras", "keras.ops attacks")):
        floor_s, apgd_s, apgd_acc, aa_s, result = _measure_backend(model_fn, x, y, eps, norm, implementation, floor)
        rows.append(_backend_row(f"TensorFlow {tf.__version__}, {label}", floor_s, apgd_s, apgd_acc, aa_s,
                                 result.final_robust_accuracy))
        robust[implementation] = result.robust
    with tempfile.TemporaryDirectory() as tmp:
        weights = victim.model.get_weights()
        np.savez(f"{tmp}/payload.npz", x=x, y=y, classes=victim.num_classes, width=victim.run.settings["train.width"],
                 eps=eps, norm=FLAGS.norm, batch_size=FLAGS.batch_size, seed=FLAGS.seed, n_weights=len(weights),
                 **{f"w{i}": w for i, w in enumerate(weights)})
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        done = subprocess.run([sys.executable, "-m", "benchmarks.autoattack_speed", "--jax_worker",
                               f"{tmp}/payload.npz", f"{tmp}/row.json"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the JAX run failed:\n{done.stderr[-3000:]}")
        with open(f"{tmp}/row.json") as f:
            rows.append(json.load(f))
    robust["jax"] = np.asarray(rows[-1].pop("robust"), bool)
    print(f"\nbackends ({len(y)} test images of {victim.dataset.name}, L{FLAGS.norm} eps {eps:.5g}, batch "
          f"{FLAGS.batch_size}; each time the second of two identical calls; floors: 100 input gradients of the "
          "images classified correctly, nothing else, in one compiled loop):")
    print("| backend, attacks | APGD-CE floor s | APGD-CE s | / floor | APGD-CE acc | AutoAttack s | / APGD-CE floor "
          "| AutoAttack acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['floor']:.1f} | {r['apgd']:.1f} | {r['apgd'] / r['floor']:.2f}x | "
              f"{r['apgd_acc']:.4f} | {r['aa']:.1f} | {r['aa'] / r['floor']:.1f}x | {r['aa_acc']:.4f} |")
    tf_ref, jx = rows[1], rows[2]
    print(f"\nJAX / TensorFlow (keras.ops attacks on both): APGD-CE {jx['apgd'] / tf_ref['apgd']:.2f}x, "
          f"AutoAttack {jx['aa'] / tf_ref['aa']:.2f}x, gradient floor {jx['floor'] / tf_ref['floor']:.2f}x")
    print(f"robust verdicts that differ, keras.ops TensorFlow vs JAX: {int(np.sum(robust['keras'] != robust['jax']))}; "
          f"tf.function vs keras.ops on TensorFlow: {int(np.sum(robust['tensorflow'] != robust['keras']))} "
          f"(of {len(y)})")


def main(_):
    if FLAGS.only == "backends":
        norm = np.inf if FLAGS.norm == "inf" else 2
        eps = FLAGS.eps if FLAGS.eps is not None else importlib.import_module("attacks.autoattack").DEFAULT_EPS[norm]
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
        _backends_table(load_victim(FLAGS.run_dir, FLAGS.n), eps, norm)
        return
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
    _backends_table(victim, eps, norm)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--jax_worker"]:
        _jax_worker(*sys.argv[2:4])
    else:
        app.run(main)
