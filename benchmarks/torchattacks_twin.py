"""Standard AutoAttack: this project's (TensorFlow, attacks/autoattack.py) beside torchattacks
3.5.1's on a PyTorch twin of the same classifier (its weights ported), on the same test images, in
one process.

    # torch (CPU wheel) and torchattacks, as benchmarks/requirements.txt says (torchattacks --no-deps)
    python -m benchmarks.torchattacks_twin --run_dir runs/RUN --n 100

The run and its images are loaded as benchmarks/autoattack_speed.py loads them
(benchmarks/common.py: the float32 EMA classifier, the --test_limit class-balanced test subset of
--n images). The twin is models/classifier.py's Table 1 network written in torch.nn (3x3 "same"
convolutions, leaky ReLU 0.2, 2x2 average pools, global average pooling); before anything is
timed its logits are compared with the Keras model's on all the images and the script stops if
they differ by more than --max_logit_gap.

Timed, each after a warm-up on 8 images at tiny budgets, one after the other in this process:
- torchattacks.AutoAttack(twin, norm="L2", eps, version="standard", n_classes, seed=0), called as
  its documentation shows, on batches of --batch_size. Its "standard" version runs its own
  defaults: APGD-CE, APGD-T (9 targets) and FAB-T (9 targets) at 10 steps each, Square at 5,000
  queries with the p schedule rescaled (the original AutoAttack, and this project's, run 100
  iterations and Square unrescaled);
- this project's standard AutoAttack (the original's budgets);
- this project's AutoAttack at torchattacks' budgets (10 iterations, Square rescaled), so that the
  time ratio can also be read at equal work.
A torchattacks output counts only where finite and inside the ball and box (benchmarks/common.py),
as this project's AutoAttack counts its own; an example is robust if the twin classifies it
correctly and no counted output is misclassified. Prints the robust accuracies, their difference
in percentage points, the per-example agreement of the robust flags, the seconds and the
torchattacks / ours time ratios.
"""
from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import attacks  # noqa: E402
from benchmarks.common import in_threat_model, load_victim  # noqa: E402

flags.DEFINE_string("run_dir", None, "A trained run whose EMA classifier is attacked.", required=True)
flags.DEFINE_integer("n", 100, "Test images.")
flags.DEFINE_integer("batch_size", 500, "Batch size of both implementations.")
flags.DEFINE_float("eps", 0.5, "L2 radius.")
flags.DEFINE_integer("seed", 0, "Seed of both AutoAttacks.")
flags.DEFINE_float("max_logit_gap", 1e-4, "Largest allowed |twin logits - Keras logits|.")
flags.DEFINE_bool("matched_budget", True, "Also time this project's AutoAttack at torchattacks' budgets.")
FLAGS = flags.FLAGS

# torchattacks 3.5.1's AutoAttack(version="standard") builds APGD, APGDT and FAB with their default
# steps=10 and Square(n_queries=5000) with its default resc_schedule=True.
TORCHATTACKS_BUDGETS = {"apgd-ce": dict(n_iter=10), "apgd-t": dict(n_iter=10), "fab-t": dict(n_iter=10),
                        "square": dict(rescale_schedule=True)}
_WARM_UP = {"apgd-ce": dict(n_iter=2), "apgd-t": dict(n_iter=2), "fab-t": dict(n_iter=2), "square": dict(n_queries=2)}


def torch_twin(keras_model):
    """torch.nn copy of the Table 1 classifier with the Keras model's weights (NCHW inputs)."""
    import torch
    from torch import nn

    convs = [layer for layer in keras_model.layers if isinstance(layer, keras.layers.Conv2D)]
    pooled_after = {layer.name.replace("pool", "conv") for layer in keras_model.layers
                    if isinstance(layer, keras.layers.AveragePooling2D)}
    modules = []
    for layer in convs:
        kernel, bias = layer.get_weights()  # kernel [3, 3, in, out]
        conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(np.ascontiguousarray(bias))
        modules += [conv, nn.LeakyReLU(0.2)]
        if layer.name in pooled_after:
            modules.append(nn.AvgPool2d(2))

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*modules)

        def forward(self, x):
            return self.body(x).mean(dim=(2, 3))

    return Twin().eval()


def _time_stages(autoattack, stages):
    """Adds each of torchattacks' AutoAttack stages' seconds and examples attacked to `stages`."""
    for stage in autoattack._autoattack.attacks:  # its MultiAttack, in order
        def timed(images, labels, _forward=stage.forward, _name=type(stage).__name__):
            started = time.perf_counter()
            out = _forward(images, labels)
            entry = stages.setdefault(_name, [0.0, 0])
            entry[0] += time.perf_counter() - started
            entry[1] += len(labels)
            return out
        stage.forward = timed


def _ours(model_fn, x, y, attack_kwargs=None):
    attacks.autoattack(model_fn, x[:8], y[:8], eps=FLAGS.eps, batch_size=FLAGS.batch_size,
                       attack_kwargs=_WARM_UP)  # warm-up: trace and compile
    started = time.perf_counter()
    result = attacks.autoattack(model_fn, x, y, eps=FLAGS.eps, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                attack_kwargs=attack_kwargs)
    return time.perf_counter() - started, result


def main(_):
    import torch
    import torchattacks

    victim = load_victim(FLAGS.run_dir, FLAGS.n)
    x, y, model_fn = victim.x, victim.y, victim.model_fn
    classes = victim.num_classes
    twin = torch_twin(victim.model)
    x_t, y_t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    keras_logits = np.concatenate([np.asarray(model_fn(x[i:i + FLAGS.batch_size]))
                                   for i in range(0, len(y), FLAGS.batch_size)])
    with torch.no_grad():
        twin_logits = twin(x_t).numpy()
    gap = float(np.abs(twin_logits - keras_logits).max())
    same_predictions = float(np.mean(twin_logits.argmax(1) == keras_logits.argmax(1)))
    print(f"twin logits vs Keras on {len(y)} images: max abs difference {gap:.2e} (limit {FLAGS.max_logit_gap:g}); "
          f"same prediction on {same_predictions:.4f}", flush=True)
    if not gap <= FLAGS.max_logit_gap:
        raise SystemExit(f"the PyTorch twin does not compute the Keras model's logits "
                         f"(max abs difference {gap:.2e} > {FLAGS.max_logit_gap:g})")

    stages = {}  # torchattacks attack -> [seconds, examples attacked]

    def run_theirs(images, labels):
        attack = torchattacks.AutoAttack(twin, norm="L2", eps=FLAGS.eps, version="standard", n_classes=classes,
                                         seed=FLAGS.seed)
        _time_stages(attack, stages)
        return torch.cat([attack(images[i:i + FLAGS.batch_size], labels[i:i + FLAGS.batch_size]).detach()
                          for i in range(0, len(labels), FLAGS.batch_size)])

    for warm in (torchattacks.APGD(twin, norm="L2", eps=FLAGS.eps, steps=2),
                 torchattacks.APGDT(twin, norm="L2", eps=FLAGS.eps, steps=2, n_classes=classes),
                 torchattacks.FAB(twin, norm="L2", eps=FLAGS.eps, steps=2, multi_targeted=True, n_classes=classes),
                 torchattacks.Square(twin, norm="L2", eps=FLAGS.eps, n_queries=2)):
        warm(x_t[:8], y_t[:8])  # warm-up
    print(f"torchattacks {torchattacks.__version__} standard AutoAttack on {len(y)} images...", flush=True)
    started = time.perf_counter()
    adv_t = run_theirs(x_t, y_t)
    seconds_theirs = time.perf_counter() - started
    adv = adv_t.numpy().transpose(0, 2, 3, 1)
    adv, valid = in_threat_model(x, adv, FLAGS.eps, 2)
    with torch.no_grad():
        clean_theirs = twin_logits.argmax(1) == y
        fooled_twin = twin(torch.from_numpy(adv.transpose(0, 3, 1, 2).copy())).argmax(1).numpy() != y
    fooled_keras = np.concatenate([np.argmax(np.asarray(model_fn(adv[i:i + FLAGS.batch_size])), -1)
                                   for i in range(0, len(y), FLAGS.batch_size)]) != y
    robust_theirs = clean_theirs & ~(fooled_twin & valid)
    robust_theirs_keras = (keras_logits.argmax(1) == y) & ~(fooled_keras & valid)
    print(f"  {seconds_theirs:.1f} s, robust accuracy {robust_theirs.mean():.4f}; per stage: "
          + ", ".join(f"{k} {v[0]:.1f} s ({v[1]} attacked)" for k, v in stages.items()), flush=True)

    print("this project's standard AutoAttack...", flush=True)
    seconds_ours, ours = _ours(model_fn, x, y)
    print(f"  {seconds_ours:.1f} s, robust accuracy {ours.final_robust_accuracy:.4f}", flush=True)
    matched = None
    if FLAGS.matched_budget:
        print("this project's AutoAttack at torchattacks' budgets...", flush=True)
        matched = _ours(model_fn, x, y, TORCHATTACKS_BUDGETS)
        print(f"  {matched[0]:.1f} s, robust accuracy {matched[1].final_robust_accuracy:.4f}", flush=True)

    name = f"torchattacks {torchattacks.__version__}"
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; tensorflow "
          f"{tf.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), {name}; run "
          f"{victim.run.name}, {len(y)} test images of {victim.dataset.name}, L2 eps {FLAGS.eps:g}, seed {FLAGS.seed}, "
          f"batch {FLAGS.batch_size}; twin logits max abs difference {gap:.2e}")
    print("\n| AutoAttack | budgets | seconds | clean acc | robust acc | robust acc - ours standard (pp) "
          "| same robust flag as ours standard | torchattacks / this seconds |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(f"{name} (PyTorch twin)", "APGD 10 steps, 9-target APGD-T / FAB-T 10 steps, Square 5,000 rescaled",
             seconds_theirs, clean_theirs.mean(), robust_theirs)]
    rows.append(("this project, standard", "APGD 100 iterations, 9-target APGD-T / FAB-T 100, Square 5,000",
                 seconds_ours, ours.robust_accuracy["clean"], ours.robust))
    if matched:
        rows.append(("this project, torchattacks' budgets", "APGD 10 iterations, 9-target APGD-T / FAB-T 10, "
                     "Square 5,000 rescaled", matched[0], matched[1].robust_accuracy["clean"], matched[1].robust))
    for label, budgets, seconds, clean, robust in rows:
        print(f"| {label} | {budgets} | {seconds:.1f} | {clean:.4f} | {robust.mean():.4f} | "
              f"{100 * (robust.mean() - ours.final_robust_accuracy):+.1f} | {np.mean(robust == ours.robust):.4f} | "
              f"{seconds_theirs / seconds:.2f}x |")
    print(f"\ntorchattacks - ours standard: {100 * (robust_theirs.mean() - ours.final_robust_accuracy):+.1f} pp "
          f"robust accuracy; robust flags agree on {np.mean(robust_theirs == ours.robust):.4f} of the {len(y)} "
          f"examples ({int(np.sum(robust_theirs & ~ours.robust))} robust only for torchattacks, "
          f"{int(np.sum(~robust_theirs & ours.robust))} only for ours); time torchattacks / ours "
          f"{seconds_theirs / seconds_ours:.2f}x")
    print(f"torchattacks outputs refused (non-finite, outside the ball or box): {int(np.sum(~valid))}; its "
          f"points judged by the Keras model instead of the twin: robust accuracy {robust_theirs_keras.mean():.4f}")
    print("torchattacks per stage (seconds, examples attacked): "
          + ", ".join(f"{k} {v[0]:.1f} s ({v[1]})" for k, v in stages.items()))
    for label, result in (("ours standard", ours), ("ours at torchattacks' budgets", matched and matched[1])):
        if result:
            print(f"{label} per stage: " + ", ".join(f"{k} {v:.4f} ({result.seconds[k]:.1f} s)"
                                                     for k, v in result.robust_accuracy.items()))


if __name__ == "__main__":
    app.run(main)
