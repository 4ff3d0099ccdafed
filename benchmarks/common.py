"""What the AutoAttack benchmarks share: one way of loading the attacked classifier and its test
images, and one rule for which adversarial outputs count.

``load_victim`` loads a run as eval does (eval.runs.load_run, its EMA classifier in float32) and
the class-balanced test subset of ``n`` images of the run's dataset that ``--test_limit n`` gives
(in the split's order; a smaller subset is contained in a larger one), scaled to [0, 1].
``in_threat_model`` says which outputs of another library count: finite, inside the ball and the
box, as this project's AutoAttack counts its own.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import data
from eval.runs import load_run


@dataclasses.dataclass
class Victim:
    run: object  # eval.runs.TrainedRun
    dataset: object  # data.Dataset
    x: np.ndarray  # [N, H, W, C] float32 in [0, 1]
    y: np.ndarray  # [N] int64
    model: object  # keras.Model, float32 EMA classifier
    model_fn: object  # images -> logits, inference mode

    @property
    def num_classes(self) -> int:
        return int(np.asarray(self.model_fn(self.x[:1])).shape[-1])


def load_victim(run_dir: str, n: int) -> Victim:
    run = load_run(run_dir)
    dataset = data.load_dataset(run.data_config(test_limit=n))
    x = dataset.test_images.astype(np.float32) / 255.0
    y = dataset.test_labels.astype(np.int64)
    model = run.build_classifier()
    return Victim(run, dataset, x, y, model, lambda images: model(images, training=False))


def in_threat_model(x, x_adv, eps, norm, tolerance=1e-5):
    """(x_adv with non-finite outputs replaced by x, flags of the outputs that count)."""
    x_adv = np.asarray(x_adv, np.float32)
    flat = x_adv.reshape(len(x), -1)
    valid = np.all(np.isfinite(flat), axis=1)
    x_adv = np.where(valid[:, None, None, None], np.nan_to_num(x_adv), x)
    delta = (x_adv - x).reshape(len(x), -1).astype(np.float64)
    radius = np.abs(delta).max(1) if norm == np.inf else np.sqrt((delta ** 2).sum(1))
    valid &= (radius <= eps + tolerance) & (flat.min(1) >= -1e-6) & (flat.max(1) <= 1 + 1e-6)
    return x_adv, valid
