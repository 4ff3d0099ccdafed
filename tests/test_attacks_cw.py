"""Properties of attacks/cw.py (Carlini-Wagner L2): closed form on affine models, agreement
with foolbox 3.3.4's L2CarliniWagnerAttack, box, labels, chunking, tracing, argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
from attacks import cw as cw_module

# The PGN paper's evaluation settings (docs/methods.md section 2), CleverHans v3's defaults otherwise.
PAPER = dict(max_iterations=100, binary_search_steps=5, learning_rate=5e-3, initial_const=1e-2,
             confidence=0.0, abort_early=True)
AFFINE_SHAPE = (4, 4, 3)
CONV_SHAPE = (8, 8, 3)


def affine_model(classes, seed=0, bias_scale=0.1):
    """Flatten + Dense(classes) with known weights W [D, K] and bias b [K]."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(AFFINE_SHAPE))
    weights = rng.normal(size=(dim, classes)).astype(np.float32)
    bias = (bias_scale * rng.normal(size=classes)).astype(np.float32)
    model = keras.Sequential([keras.Input(AFFINE_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(classes)])
    model.layers[-1].set_weights([weights, bias])
    return model, weights, bias


def affine_minimal_l2(x, weights, bias):
    """Exact minimal L2 distance from each x to the region where its predicted class y loses:
    min over j != y of |(w_y - w_j).x + b_y - b_j| / ||w_y - w_j|| (the box ignored)."""
    logits = x.reshape(len(x), -1) @ weights + bias
    y = logits.argmax(1)
    gaps = logits[np.arange(len(x)), y][:, None] - logits  # [B, K], 0 at j = y
    normals = np.linalg.norm(weights[:, y].T[:, None, :] - weights.T[None], axis=-1)
    distances = np.where(normals > 0, gaps / np.where(normals > 0, normals, 1.0), np.inf)
    return distances.min(1), y


def middle_of_box(n, shape, seed=1):
    # In [0.4, 0.6]: minimal perturbations here (~0.05-0.3 in L2 over 48 pixels) stay far
    # from the faces of [0, 1], so the box does not bind and the closed form holds.
    return np.random.default_rng(seed).uniform(0.4, 0.6, (n, *shape)).astype(np.float32)


def norms(x_adv, x):
    return np.linalg.norm((np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1), axis=1)


@pytest.fixture(scope="module")
def conv_model_and_data():
    """A small conv net trained briefly on a learnable rule: somewhat confident, not perfect."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input(CONV_SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="tanh"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])
    rng = np.random.default_rng(2)
    data = rng.uniform(0, 1, (128, *CONV_SHAPE)).astype(np.float32)
    labels = np.argmax((data.reshape(128, -1) - 0.5) @ rng.normal(size=(data[0].size, 5)), axis=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, labels, batch_size=32, epochs=10, verbose=0)
    return model, data[:16], labels[:16]


# ---- closed form --------------------------------------------------------------------

# With the paper's 100 iterations Adam has not fully turned onto the boundary's nearest
# point; with 1000 iterations and 9 binary-search steps (Carlini & Wagner's own defaults
# for the step count) it has. Measured worst / mean excess over the optimum, 2 and 4 classes:
# paper 2.7% / 2.2% and 3.7% / 0.4%; long 0.01% / 0.003% and 1.3% / 0.1%.
LONG = {**PAPER, "max_iterations": 1000, "binary_search_steps": 9}


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("settings, worst, mean", [(PAPER, 1.06, 1.03), (LONG, 1.02, 1.005)],
                         ids=["paper", "long"])
def test_affine_distance_matches_closed_form(classes, settings, worst, mean):
    """For an affine model, any c above the threshold puts the minimiser of ||d||^2 + c f
    exactly on the nearest decision boundary (the hinge is flat past it), so CW's gap to the
    optimum is only how far Adam has converged (and, with more than two classes, a facet
    other than the nearest one it may settle on). Asserted: every output misclassified,
    none below the optimum (less 1e-4 relative: float32 logits), worst and mean excess under
    the bounds above, which leave ~2x margin over the measured figures."""
    model, weights, bias = affine_model(classes)
    x = middle_of_box(16, AFFINE_SHAPE)
    optimum, y = affine_minimal_l2(x, weights, bias)
    x_adv = attacks.carlini_wagner_l2(model, tf.constant(x), y=y, **settings).numpy()
    assert np.all(model(x_adv).numpy().argmax(1) != y)
    ratio = norms(x_adv, x) / optimum
    assert ratio.min() >= 1 - 1e-4, ratio
    assert ratio.max() <= worst, ratio
    assert ratio.mean() <= mean, ratio


@pytest.mark.parametrize("targeted", [False, True])
def test_confidence_margin_is_reached(targeted):
    """v3's success test shifts the label's logit by the confidence: what CW returns has
    max_{j != y} Z_j - Z_y >= kappa (untargeted) or Z_t - max_{j != t} Z_j >= kappa (targeted)."""
    model, _, _ = affine_model(4)
    x = middle_of_box(8, AFFINE_SHAPE)
    y = model(x).numpy().argmax(1)
    labels = (y + 1) % 4 if targeted else y
    x_adv = attacks.carlini_wagner_l2(model, x, y=labels, targeted=targeted,
                                      **{**PAPER, "confidence": 2.0})
    margin = attacks.margin_loss(labels, model(x_adv)).numpy()
    if targeted:
        margin = -margin
    assert np.all(margin >= 2.0 - 1e-4), margin


# ---- agreement with foolbox ---------------------------------------------------------

@pytest.mark.slow
def test_agrees_with_foolbox(conv_model_and_data):
    """foolbox 3.3.4 runs the same algorithm (tanh box, Adam, v3's binary search and abort
    rule; only its first abort reference is +inf instead of 1e6, and it places Adam's epsilon
    after bias correction), so with the same settings the two should find the same points.
    Measured on these 16 images (10 correctly classified): success 16/16 vs 16/16; mean L2
    of successful examples 0.15765 vs 0.15764, over the correctly classified ones 0.25224
    vs 0.25223 (per-example ratios 1.000-1.020). Asserted: both means within 5%, success
    counts within one example."""
    fb = pytest.importorskip("foolbox")
    model, x, y = conv_model_and_data
    x_adv = attacks.carlini_wagner_l2(model, tf.constant(x), y=y, **PAPER).numpy()
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=PAPER["binary_search_steps"], steps=PAPER["max_iterations"],
        stepsize=PAPER["learning_rate"], confidence=PAPER["confidence"],
        initial_const=PAPER["initial_const"], abort_early=True)
    # foolbox as shipped; the model goes in as a tf.function of itself (same weights and
    # logits), which makes foolbox's 500 eager Adam steps ~3x faster.
    compiled = tf.function(model, reduce_retracing=True)
    fb_adv, _, _ = attack(fb.TensorFlowModel(compiled, bounds=(0, 1)), tf.constant(x),
                          tf.constant(y), epsilons=None)
    fb_adv = fb_adv.numpy()

    ours_ok = model(x_adv).numpy().argmax(1) != y
    theirs_ok = model(fb_adv).numpy().argmax(1) != y
    assert abs(int(ours_ok.sum()) - int(theirs_ok.sum())) <= 1
    ours, theirs = norms(x_adv, x), norms(fb_adv, x)
    assert ours[ours_ok].mean() == pytest.approx(theirs[theirs_ok].mean(), rel=0.05)
    # Over the examples the model got right, without the ~0 distances of the others.
    correct = model(x).numpy().argmax(1) == y
    assert correct.sum() >= 5
    assert ours[ours_ok & correct].mean() == pytest.approx(theirs[theirs_ok & correct].mean(), rel=0.05)


# ---- properties ---------------------------------------------------------------------

@pytest.mark.slow
def test_stays_in_box_and_keeps_shape(conv_model_and_data):
    model, x, y = conv_model_and_data
    # Half the pixels on the faces of a narrower box, where atanh would be infinite unshrunk.
    x = np.clip(x[:8], 0.2, 0.8)
    x_adv = attacks.carlini_wagner_l2(model, x, y=y[:8], clip_min=0.2, clip_max=0.8,
                                      **{**PAPER, "max_iterations": 20})
    assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
    assert np.all(np.isfinite(x_adv)) and np.all(x_adv >= 0.2) and np.all(x_adv <= 0.8)


def test_misclassified_examples_move_by_about_zero():
    model, _, _ = affine_model(4)
    x = middle_of_box(6, AFFINE_SHAPE)
    wrong = (model(x).numpy().argmax(1) + 1) % 4
    x_adv = attacks.carlini_wagner_l2(model, x, y=wrong, **PAPER)
    # The first iterate is tanh(atanh(x * 0.999999)), within ~1e-6 of x per pixel.
    assert np.all(norms(x_adv, x) < 1e-4)


def test_failures_return_x_exactly():
    """A model whose logits ignore x cannot be fooled: every example fails; x comes back
    bit for bit in its own dtype (float64 here, although the attack runs in float32)."""
    model = keras.Sequential([keras.Input(AFFINE_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(3, kernel_initializer="zeros",
                                                 bias_initializer=keras.initializers.Constant([3.0, 0.0, 0.0]))])
    x = middle_of_box(4, AFFINE_SHAPE).astype(np.float64) + 1e-9
    x_adv = attacks.carlini_wagner_l2(model, x, y=np.zeros(4, np.int64), **{**PAPER, "max_iterations": 20})
    assert x_adv.dtype == tf.float64
    np.testing.assert_array_equal(x_adv.numpy(), x)


def test_targeted_reaches_the_target():
    model, _, _ = affine_model(4, seed=3)
    x = middle_of_box(8, AFFINE_SHAPE)
    target = (model(x).numpy().argmax(1) + 2) % 4
    x_adv = attacks.carlini_wagner_l2(model, x, y=target, targeted=True, **PAPER)
    np.testing.assert_array_equal(model(x_adv).numpy().argmax(1), target)


def test_default_labels_are_the_predictions():
    model, _, _ = affine_model(4)
    x = middle_of_box(6, AFFINE_SHAPE)
    y = model(x).numpy().argmax(1)
    np.testing.assert_allclose(attacks.carlini_wagner_l2(model, x, **PAPER),
                               attacks.carlini_wagner_l2(model, x, y=y, **PAPER), atol=1e-6)


def test_chunks_equal_separate_calls():
    """10 examples with batch_size 4: chunks of 4, 4, 2, each one call of the compiled
    function. The abort rule looks at a chunk's summed loss, so the result is the per-chunk
    one, not a 10-example batch's."""
    model, _, _ = affine_model(4)
    x = middle_of_box(10, AFFINE_SHAPE)
    y = model(x).numpy().argmax(1)
    chunked = attacks.carlini_wagner_l2(model, x, y=y, batch_size=4, **PAPER).numpy()
    separate = np.concatenate([attacks.carlini_wagner_l2(model, x[i:i + 4], y=y[i:i + 4], **PAPER)
                               for i in (0, 4, 8)])
    np.testing.assert_allclose(chunked, separate, atol=1e-6)
    assert np.all(model(chunked).numpy().argmax(1) != y)


def test_traces_once_and_inlines_in_a_tf_function():
    model, _, _ = affine_model(4, seed=5)  # a fresh model_fn: its first call must trace
    x = middle_of_box(6, AFFINE_SHAPE)
    before = cw_module._cw_compiled.experimental_get_tracing_count()
    first = attacks.carlini_wagner_l2(model, x, **PAPER)
    # New values, learning rate and iteration count: tensors, so no retrace.
    attacks.carlini_wagner_l2(model, x[::-1].copy(), **{**PAPER, "learning_rate": 1e-2,
                                                         "max_iterations": 50})
    assert cw_module._cw_compiled.experimental_get_tracing_count() == before + 1

    inlined = tf.function(lambda t: attacks.carlini_wagner_l2(model, t, **PAPER))(tf.constant(x))
    np.testing.assert_allclose(inlined, first, atol=1e-6)


def test_mixed_precision_model_gives_float32_result():
    """What CW guarantees under mixed_float16: float32 in, float32 out, and adversarials judged on
    the logits cast to float32. Success is checked on a float32 copy of the model with a margin
    (confidence 0.1, far above float16's rounding of logits near 2.4, about 0.002), never on a
    float16 tie-break: which of two logits tied in float16 argmax picks depends on the CPU's
    float16 kernels (oneDNN or not)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _, _ = affine_model(4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference, _, _ = affine_model(4)  # float32, the same weights
    reference.set_weights(model.get_weights())
    x = middle_of_box(4, AFFINE_SHAPE)
    y = reference(x).numpy().argmax(1)
    confidence = 0.1
    x_adv = attacks.carlini_wagner_l2(model, x, y=y, **{**PAPER, "confidence": confidence})
    assert x_adv.dtype == tf.float32 and np.all(np.isfinite(x_adv))
    assert np.all((x_adv.numpy() >= 0.0) & (x_adv.numpy() <= 1.0))
    logits = reference(x_adv).numpy().astype(np.float64)
    others = np.where(np.eye(4, dtype=bool)[y], -np.inf, logits).max(1)
    margin = others - logits[np.arange(len(y)), y]
    assert np.all(margin > confidence / 2), margin  # float16 rounding eats far less than half of it


# ---- argument checks ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(binary_search_steps=0), "binary_search_steps"),
    (dict(binary_search_steps=2.5), "binary_search_steps"),
    (dict(max_iterations=-1), "max_iterations"),
    (dict(batch_size=0), "batch_size"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
    (dict(clip_min=0.5, clip_max=0.5), "clip_min"),
    (dict(clip_min=None), "clip_min and clip_max"),
    (dict(clip_min=0.5), r"x must lie in"),
    (dict(targeted=True), "target"),
    (dict(confidence=-1.0), "confidence"),
    (dict(initial_const=0.0), "initial_const"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(y=np.zeros(3, np.int64)), "examples"),
])
def test_bad_arguments_raise(kwargs, match):
    model, _, _ = affine_model(2)
    x = middle_of_box(2, AFFINE_SHAPE) - 0.2  # in [0.2, 0.4]
    with pytest.raises(ValueError, match=match):
        attacks.carlini_wagner_l2(model, x, **kwargs)
