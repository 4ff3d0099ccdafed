"""This project's APGD-CE, APGD-DLR and Square against the Adversarial Robustness Toolbox 1.20.1's
AutoProjectedGradientDescent and SquareAttack (TensorFlowV2Classifier), on the same small CNN,
images, radius and iteration budget: ours must reach a robust accuracy at most ART's plus two of
the 32 examples (slack for tiny n and different random draws).

ART's outputs are checked as AutoAttack checks its own: a point counts only if it is finite and
inside the ball and box (ART 1.20.1's L2 Square returns NaN images on 8 x 8 inputs, where its
start pattern is empty, and can on 16 x 16: a division by a zero norm in its update).
"""

import numpy as np
import pytest

import attacks
from tests.autoattack_models import distances, small_cnn, synthetic_images

SHAPE = (16, 16, 3)  # ART's L2 Square needs H // 5 >= 2
SLACK_EXAMPLES = 2


def _robust_accuracy(model, x, y, x_adv, eps, norm):
    x_adv = np.asarray(x_adv, np.float32)
    valid = np.all(np.isfinite(x_adv.reshape(len(x), -1)), axis=1)
    x_adv = np.where(valid[:, None, None, None], np.nan_to_num(x_adv), x)
    valid &= distances(x_adv, x, norm) <= eps + 1e-5
    valid &= (x_adv.reshape(len(x), -1).min(1) >= -1e-6) & (x_adv.reshape(len(x), -1).max(1) <= 1 + 1e-6)
    fooled = (model(x_adv).numpy().argmax(1) != y) & valid
    return float(1.0 - fooled.mean())


@pytest.mark.slow
@pytest.mark.parametrize("norm", [2, np.inf], ids=["l2", "linf"])
def test_at_most_art_robust_accuracy(norm):
    art = pytest.importorskip("art", reason="adversarial-robustness-toolbox is not installed")
    import keras
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    assert art.__version__ == "1.20.1"
    model = small_cnn(shape=SHAPE)
    x, y = synthetic_images(32, seed=11, shape=SHAPE)
    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=5, input_shape=SHAPE, clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    onehot = np.eye(5, dtype=np.float32)[y]
    # Radii at which these attacks fool some but not all examples of this model.
    gradient_eps = 1.0 if norm == 2 else 8 / 255
    square_eps = 2.0 if norm == 2 else 16 / 255
    figures = {}
    for loss, art_loss in (("ce", "cross_entropy"), ("dlr", "difference_logits_ratio")):
        reference = AutoProjectedGradientDescent(
            classifier, norm=norm, eps=gradient_eps, eps_step=2 * gradient_eps, max_iter=20, targeted=False,
            nb_random_init=1, batch_size=32, loss_type=art_loss, verbose=False).generate(x, y=onehot)
        ours = attacks.apgd(model, x, y=y, eps=gradient_eps, norm=norm, loss=loss, n_iter=20)
        figures[f"apgd-{loss}"] = (_robust_accuracy(model, x, y, ours, gradient_eps, norm),
                                   _robust_accuracy(model, x, y, reference, gradient_eps, norm))
    reference = SquareAttack(classifier, norm=norm, eps=square_eps, max_iter=300, p_init=0.8, nb_restarts=1,
                             batch_size=32, verbose=False).generate(x, y=onehot)
    ours = attacks.square_attack(model, x, y=y, eps=square_eps, norm=norm, n_queries=300)
    figures["square"] = (_robust_accuracy(model, x, y, ours, square_eps, norm),
                         _robust_accuracy(model, x, y, reference, square_eps, norm))
    print({name: f"ours {a:.4f} ART {b:.4f}" for name, (a, b) in figures.items()})
    for name, (ours_accuracy, art_accuracy) in figures.items():
        assert ours_accuracy <= art_accuracy + SLACK_EXAMPLES / len(y), (name, figures)
    # Not vacuous: the gradient attacks fool some examples and leave some.
    assert 0.0 < figures["apgd-ce"][1] < 1.0
