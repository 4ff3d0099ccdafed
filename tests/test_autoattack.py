"""Properties of attacks/autoattack.py: each attack runs only on the examples still robust, robust
accuracy never rises, misclassified examples count as not robust, x_adv stays in the ball and
box, out-of-ball outputs are refused, versions and arguments."""

import importlib

import numpy as np
import pytest

import attacks
from tests.autoattack_models import distances, small_cnn, synthetic_images

autoattack_module = importlib.import_module("attacks.autoattack")
# The standard attacks with budgets cut to a few iterations: the protocol, not the strength.
QUICK = {"apgd-ce": dict(n_iter=5), "apgd-t": dict(n_iter=3, n_target_classes=2),
         "fab-t": dict(n_iter=3, n_target_classes=2), "square": dict(n_queries=20)}


@pytest.fixture(scope="module")
def model_and_data():
    x, y = synthetic_images(24, seed=7)
    y[:3] = (y[:3] + 1) % 5  # three wrong labels: misclassified before any attack
    return small_cnn(), x, y


# The L2 case traces every attack afresh for the CNN (~7 s here); L-inf alone stays under 5 s.
@pytest.mark.parametrize("norm", [pytest.param(2, marks=pytest.mark.slow), np.inf], ids=["l2", "linf"])
def test_standard_protocol(model_and_data, norm):
    model, x, y = model_and_data
    result = attacks.autoattack(model, x, y, norm=norm, attack_kwargs=QUICK, batch_size=10)
    assert result.attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert list(result.robust_flags) == ["clean", *result.attacks]
    clean = model(x).numpy().argmax(1) == y
    np.testing.assert_array_equal(result.clean_correct, clean)
    assert not np.any(result.clean_correct[:3])
    previous = result.robust_flags["clean"]
    for name in result.attacks:
        assert result.attacked[name] == previous.sum()  # only the still-robust examples
        assert not np.any(result.robust_flags[name] & ~previous)  # robust only if robust before
        previous = result.robust_flags[name]
    accuracies = list(result.robust_accuracy.values())
    assert all(a >= b for a, b in zip(accuracies, accuracies[1:]))
    assert accuracies[-1] < accuracies[0]  # the attacks found something
    eps = 0.5 if norm == 2 else 8 / 255
    assert result.eps == pytest.approx(eps)
    assert result.max_perturbation <= eps + 1e-5
    assert distances(result.x_adv, x, norm).max() <= eps + 1e-5
    assert result.x_adv.dtype == np.float32 and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    # The worst case is what the flags say: robust examples are classified correctly at x_adv.
    predicted = model(result.x_adv).numpy().argmax(1)
    np.testing.assert_array_equal(predicted == y, result.robust)
    np.testing.assert_array_equal(result.x_adv[result.robust], x[result.robust])
    assert result.forward_passes["clean"] == len(x)
    assert all(result.forward_passes[n] > 0 for n in result.attacks if result.attacked[n])
    assert result.as_dict()["final_robust_accuracy"] == pytest.approx(result.final_robust_accuracy)


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_each_attack_runs_on_a_single_example(model_and_data, name):
    """A batch of one (the last robust example of a chunk) keeps its static shape in every loop."""
    model, x, y = model_and_data
    row = np.flatnonzero(model(x).numpy().argmax(1) == y)[:1]
    result = attacks.autoattack(model, x[row], y[row], version="custom", attacks=[name],
                                attack_kwargs={name: QUICK[name]})
    assert result.attacked[name] == 1 and result.x_adv.shape == x[row].shape


def test_custom_and_rand_versions(model_and_data):
    model, x, y = model_and_data
    custom = attacks.autoattack(model, x[:8], y[:8], version="custom", attacks=["apgd-dlr", "square"],
                                attack_kwargs={"apgd-dlr": dict(n_iter=5), "square": dict(n_queries=10)})
    assert custom.attacks == ("apgd-dlr", "square")
    settings = autoattack_module.attack_settings("rand")
    assert list(settings) == ["apgd-ce", "apgd-dlr"] and all(s["eot_iter"] == 20 for s in settings.values())
    rand = attacks.autoattack(model, x[:8], y[:8], version="rand",
                              attack_kwargs={"apgd-ce": dict(n_iter=3, eot_iter=2), "apgd-dlr": dict(n_iter=3)})
    assert rand.attacks == ("apgd-ce", "apgd-dlr")
    standard = autoattack_module.attack_settings("standard")
    assert standard["square"]["n_queries"] == 5000 and standard["apgd-t"]["n_target_classes"] == 9


def test_outputs_outside_the_ball_are_refused(model_and_data, monkeypatch):
    """An 'attack' that returns a misclassified point far outside the ball fools nobody."""
    model, x, y = model_and_data

    def cheat(model_fn, x_batch, *, y, eps, norm, clip_min, clip_max, seed, **kwargs):
        return np.clip(np.asarray(x_batch) + 0.5, 0, 1)

    monkeypatch.setitem(autoattack_module._FUNCTIONS, "square", cheat)
    result = attacks.autoattack(model, x, y, version="custom", attacks=["square"], eps=0.1)
    np.testing.assert_array_equal(result.robust, result.clean_correct)
    np.testing.assert_array_equal(result.x_adv, x)
    assert result.rejected["square"] > 0


def test_square_success_after_gradient_attacks_warns(model_and_data, monkeypatch):
    model, x, y = model_and_data
    monkeypatch.setitem(autoattack_module._FUNCTIONS, "apgd-ce", lambda m, xb, **k: np.asarray(xb))
    with pytest.warns(UserWarning, match="Square lowered robust accuracy"):
        attacks.autoattack(model, x, y, version="custom", attacks=["apgd-ce", "square"],
                           attack_kwargs={"square": dict(n_queries=50)})


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="plus"), "version"),
    (dict(version="custom"), "non-empty"),
    (dict(attacks=["square"]), "only for version='custom'"),
    (dict(version="custom", attacks=["pgd"]), "distinct names"),
    (dict(norm=1), "norm"),
    (dict(attack_kwargs={"pgd": {}}), "attack_kwargs"),
])
def test_bad_arguments_raise(model_and_data, kwargs, match):
    model, x, y = model_and_data
    with pytest.raises(ValueError, match=match):
        attacks.autoattack(model, x[:2], y[:2], **kwargs)
