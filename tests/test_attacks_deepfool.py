"""DeepFool (attacks/deepfool.py): closed form on affine classifiers, CleverHans v3's loop
step by step, foolbox 3.3.4's L2DeepFoolAttack, box, stopping, tracing, argument checks."""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
from attacks.deepfool import F_FLOOR

# The package exports the function under the module's name.
deepfool_module = importlib.import_module("attacks.deepfool")
OVERSHOOT = 0.02


def fooled(model, x_adv, x):
    return np.argmax(model(x_adv), axis=1) != np.argmax(model(x), axis=1)


def l2(a, b):
    return attacks.l2_norm(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)).numpy()


# ---- affine classifiers: the first step is exact ---------------------------------------

def affine_model(classes, shape=(4, 4, 3), seed=0):
    """Z = W x + b with known W, b; logits are 0 at x = 0.5 but for small class offsets.

    Rows of W of different lengths, so that the runner-up class is not always the closest.
    """
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    w = (rng.normal(size=(dim, classes)) * rng.uniform(0.3, 3.0, size=classes)).astype(np.float32)
    b = (-0.5 * w.sum(axis=0) + rng.normal(scale=0.1, size=classes)).astype(np.float32)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes)])
    model.layers[-1].set_weights([w, b])
    # Middle of the box: the perturbations below stay far from 0 and 1, clipping never binds.
    x = rng.uniform(0.45, 0.55, (8, *shape)).astype(np.float32)
    return model, w, b, x


def affine_distances(w, b, x, nb_candidate):
    """(|f_k| + 1e-5) / ||w_k|| for the candidates other than the original, [B, nb_candidate - 1]."""
    logits = x.reshape(len(x), -1).astype(np.float64) @ w + b
    order = np.argsort(-logits, axis=1)[:, :nb_candidate]
    rows = np.arange(len(x))[:, None]
    f = logits[rows, order[:, 1:]] - logits[rows, order[:, :1]]
    w_k = w.T[order[:, 1:]] - w.T[order[:, :1]]
    return (np.abs(f) + F_FLOOR) / np.linalg.norm(w_k, axis=-1)


def test_binary_affine_matches_closed_form():
    model, w, b, x = affine_model(2)
    x_adv = attacks.deepfool(model, x, overshoot=OVERSHOOT)
    expected = (1 + OVERSHOOT) * affine_distances(w, b, x, 2)[:, 0]
    assert 0.0 < x_adv.numpy().min() and x_adv.numpy().max() < 1.0  # the box did not bind
    np.testing.assert_allclose(l2(x_adv, x), expected, rtol=1e-3)
    assert fooled(model, x_adv, x).all()


@pytest.mark.parametrize("nb_candidate", [2, 3, 10])
def test_multiclass_affine_goes_to_the_closest_candidate_boundary(nb_candidate):
    # 10 > 6 classes: capped; then the closest of all boundaries, the exact minimal L2
    # adversarial of an affine classifier (times the overshoot).
    model, w, b, x = affine_model(6)
    x_adv = attacks.deepfool(model, x, nb_candidate=nb_candidate, overshoot=OVERSHOOT)
    expected = (1 + OVERSHOOT) * affine_distances(w, b, x, min(nb_candidate, 6)).min(axis=1)
    np.testing.assert_allclose(l2(x_adv, x), expected, rtol=1e-3)
    assert fooled(model, x_adv, x).all()
    if nb_candidate == 2:
        # Fewer candidates can only find a farther boundary, and here do for 2 of 8 examples.
        everything = (1 + OVERSHOOT) * affine_distances(w, b, x, 6).min(axis=1)
        assert np.all(expected >= everything - 1e-7) and np.any(expected > everything * 1.01)


# ---- a small conv model ---------------------------------------------------------------

SHAPE = (8, 8, 3)
CLASSES = 10


def make_conv_model(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="tanh"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(16, 3, padding="same", activation="tanh"),
        keras.layers.Flatten(),
        keras.layers.Dense(CLASSES),
    ])


@pytest.fixture(scope="module")
def conv_model():
    return make_conv_model()


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(4).uniform(0, 1, (24, *SHAPE)), tf.float32)


def cleverhans_v3_reference(model, x, nb_candidate, overshoot, max_iter, clip_min, clip_max, recompute):
    """CleverHans v3's deepfool_attack loop, eager and per example, written from its source
    (recompute=True: top classes re-picked at each iterate, as v3; False: fixed at x)."""
    x = x.numpy().astype(np.float64)
    logits0 = model(x.astype(np.float32)).numpy()
    original = np.argmax(logits0, axis=1)
    fixed = np.argsort(-logits0, axis=1, kind="stable")[:, :nb_candidate]
    r_tot = np.zeros_like(x)
    x_it = x.copy()
    current = original.copy()
    for _ in range(max_iter):
        if not np.any(current == original):
            break
        x32 = tf.constant(x_it, tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x32)
            logits = model(x32)
            classes = np.argsort(-logits.numpy(), axis=1, kind="stable")[:, :nb_candidate] if recompute else fixed
            picked = tf.gather(logits, classes, batch_dims=1)
            columns = [picked[:, k] for k in range(nb_candidate)]
        grads = np.stack([tape.gradient(column, x32).numpy() for column in columns], axis=1)
        picked = picked.numpy()
        for i in np.flatnonzero(current == original):
            best, w = np.inf, None
            for k in range(1, nb_candidate):
                w_k = grads[i, k] - grads[i, 0]
                pert_k = (abs(picked[i, k] - picked[i, 0]) + F_FLOOR) / np.linalg.norm(w_k)
                if pert_k < best:
                    best, w = pert_k, w_k
            r_tot[i] += best * w / np.linalg.norm(w)
        x_it = np.clip(x + r_tot, clip_min, clip_max)
        current = np.argmax(model(x_it.astype(np.float32)).numpy(), axis=1)
    return np.clip(x + (1 + overshoot) * r_tot, clip_min, clip_max)


@pytest.mark.parametrize("recompute", [False, True])
def test_matches_cleverhans_v3_loop(conv_model, images, recompute):
    # nb_candidate 3 of 10 classes, so that re-picking the candidates can matter.
    x = images[:8]
    ours = attacks.deepfool(conv_model, x, nb_candidate=3, recompute_candidates=recompute)
    reference = cleverhans_v3_reference(conv_model, x, 3, OVERSHOOT, 100, 0.0, 1.0, recompute)
    np.testing.assert_allclose(l2(ours, x), l2(reference, x), rtol=1e-3)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)


def test_agrees_with_foolbox(conv_model, images):
    """foolbox overshoots every iterate (v3: only the result) and adds 1e-4 to the distance
    (v3: 1e-5 to |f_k|), so the norms agree closely but not exactly: measured here, median
    relative difference 0.9%, largest 2.0%, mean norm 1.3% larger (v3 stops later)."""
    fb = pytest.importorskip("foolbox")
    labels = tf.argmax(conv_model(images), axis=1)
    attack = fb.attacks.L2DeepFoolAttack(steps=100, candidates=10, overshoot=OVERSHOOT, loss="logits")
    _, theirs, their_success = attack(fb.TensorFlowModel(conv_model, bounds=(0, 1)), images,
                                      criterion=fb.criteria.Misclassification(labels), epsilons=None)
    ours = attacks.deepfool(conv_model, images, nb_candidate=10, overshoot=OVERSHOOT, max_iter=100)
    our_success = fooled(conv_model, ours, images)
    assert our_success.mean() == their_success.numpy().mean() == 1.0
    ours, theirs = l2(ours, images), l2(theirs, images)
    relative = np.abs(ours - theirs) / theirs
    assert np.median(relative) < 0.03 and np.max(relative) < 0.06, relative
    assert abs(ours.mean() / theirs.mean() - 1) < 0.03


# ---- box, stopping, dtype --------------------------------------------------------------

def test_output_in_box_shape_and_dtype(conv_model, images):
    x16 = tf.cast(images[:6], tf.float16)
    x_adv = attacks.deepfool(conv_model, x16, clip_min=0.3, clip_max=0.7, max_iter=20)
    assert x_adv.shape == x16.shape and x_adv.dtype == tf.float16
    # The box in float16: 0.7 rounds to 0.7002 there.
    assert x_adv.numpy().min() >= np.float16(0.3) and x_adv.numpy().max() <= np.float16(0.7)


def test_max_iter_zero_returns_x_in_the_box(conv_model, images):
    np.testing.assert_array_equal(attacks.deepfool(conv_model, images, max_iter=0).numpy(), images.numpy())


def test_fooled_examples_stop_moving(conv_model, images):
    x = images[:12]
    # Without overshoot the result is the iterate the loop tests: fast = done after 1 step.
    fast = fooled(conv_model, attacks.deepfool(conv_model, x, max_iter=1, overshoot=0.0), x)
    assert fast.any() and not fast.all()  # the batch mixes early and late finishers
    batched = attacks.deepfool(conv_model, x).numpy()
    for i in range(len(x)):
        # Alone, the loop ends when example i is done; in the batch it runs on for the
        # others: the same result means a fooled example stops moving.
        np.testing.assert_allclose(batched[i], attacks.deepfool(conv_model, x[i:i + 1]).numpy()[0], atol=1e-5)
    one_step = attacks.deepfool(conv_model, x, max_iter=1).numpy()
    np.testing.assert_allclose(batched[fast], one_step[fast], atol=1e-5)


# ---- compilation ------------------------------------------------------------------------

def test_traces_once_for_two_same_shaped_calls(images):
    model = make_conv_model(seed=5)  # a model_fn not traced yet
    before = deepfool_module._deepfool_compiled.experimental_get_tracing_count()
    attacks.deepfool(model, images[:5], max_iter=3, overshoot=0.05, clip_max=0.9)
    attacks.deepfool(model, images[5:10], max_iter=4, overshoot=0.01, clip_max=1.0)
    assert deepfool_module._deepfool_compiled.experimental_get_tracing_count() - before == 1


def test_runs_inside_tf_function_and_agrees_with_eager(conv_model, images):
    x = images[:6]

    @tf.function
    def attack(x):
        return attacks.deepfool(conv_model, x, nb_candidate=4, max_iter=50)

    np.testing.assert_allclose(attack(x).numpy(),
                               attacks.deepfool(conv_model, x, nb_candidate=4, max_iter=50).numpy(), atol=1e-6)


# ---- argument checks --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"nb_candidate": 1}, {"nb_candidate": 2.5}, {"max_iter": -1}, {"max_iter": 1.5},
    {"overshoot": -0.01}, {"clip_min": 0.8, "clip_max": 0.2},
])
def test_bad_arguments_raise_value_error(conv_model, images, kwargs):
    with pytest.raises(ValueError):
        attacks.deepfool(conv_model, images[:2], **kwargs)
