"""Properties of attacks/ (FGM, PGD, MIM, projection) and agreement with CleverHans 4.0.0."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method as ch_fgm
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method as ch_mim
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent as ch_pgd

import attacks
from attacks import pgd as pgd_module

SHAPE = (8, 8, 3)
CLASSES = 5
TOL = 1e-5


def make_model(seed=0, output_dtype=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="tanh"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(CLASSES, dtype=output_dtype),
    ])


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def x():
    # Well inside [0, 1]: small perturbations are not clipped by the box.
    return tf.constant(np.random.default_rng(0).uniform(0.25, 0.75, (6, *SHAPE)), tf.float32)


@pytest.fixture(scope="module")
def labels():
    return tf.constant(np.random.default_rng(1).integers(0, CLASSES, 6), tf.int64)


@pytest.fixture(scope="module")
def trained_model():
    """A model trained for a few steps on a learnable rule, so it is somewhat confident."""
    model = make_model(seed=1)
    rng = np.random.default_rng(2)
    data = rng.uniform(0, 1, (64, *SHAPE)).astype(np.float32)
    targets = np.argmax((data.reshape(64, -1) - 0.5) @ rng.normal(size=(data[0].size, CLASSES)), axis=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, targets, batch_size=32, epochs=15, verbose=0)
    return model, tf.constant(data[:16]), tf.constant(targets[:16])


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def delta_norms(x_adv, x):
    return attacks.l2_norm(x_adv - x).numpy()


# ---- FGM properties -------------------------------------------------------------------

@pytest.mark.parametrize("clip", [(None, None), (0.0, 1.0)])
def test_fgm_l2_step_has_length_eps(model, x, clip):
    x_adv = attacks.fast_gradient_method(model, x, 0.1, 2, clip_min=clip[0], clip_max=clip[1])
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    np.testing.assert_allclose(delta_norms(x_adv, x), 0.1, atol=TOL)


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_zero_eps_returns_x(model, x, norm):
    np.testing.assert_array_equal(attacks.fast_gradient_method(model, x, 0.0, norm), x)
    np.testing.assert_array_equal(
        attacks.projected_gradient_descent(model, x, 0.0, 0.0, 3, norm, rand_init=True), x)
    np.testing.assert_array_equal(attacks.momentum_iterative_method(model, x, 0.0, 0.0, 3, norm), x)


def test_fgm_linf_moves_every_coordinate_with_gradient_by_eps(model, x):
    y = tf.argmax(model(x), -1)
    grad = attacks.loss_gradient(model, attacks.cross_entropy_loss, x, y, False).numpy()
    delta = np.abs((attacks.fast_gradient_method(model, x, 0.03, np.inf) - x).numpy())
    moved = grad != 0
    assert moved.mean() > 0.9
    np.testing.assert_allclose(delta[moved], 0.03, atol=TOL)
    np.testing.assert_array_equal(delta[~moved], 0.0)


def test_margin_loss_values():
    logits = tf.constant([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    np.testing.assert_allclose(attacks.margin_loss(tf.constant([0, 1]), logits), [2.0, -1.0])


def test_projection_clips_and_does_not_expand():
    eta = tf.constant([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(attacks.clip_eta(eta, 2, 1.0), [[0.6, 0.8], [0.3, 0.4]], atol=1e-6)
    np.testing.assert_allclose(attacks.clip_eta(eta, np.inf, 0.35), [[0.35, 0.35], [0.3, 0.35]])
    projected = attacks.project(tf.constant([[1.5, -0.5]]), tf.constant([[0.9, 0.1]]), np.inf, 0.2, 0.0, 1.0)
    np.testing.assert_allclose(projected, [[1.0, 0.0]], atol=1e-6)


# ---- Agreement with CleverHans 4.0.0 -----------------------------------------------------

@pytest.mark.parametrize("norm,eps", [(2, 0.5), (np.inf, 0.05)])
@pytest.mark.parametrize("use_labels", [False, True])
def test_fgm_matches_cleverhans(model, x, labels, norm, eps, use_labels):
    y = labels if use_labels else None
    ours = attacks.fast_gradient_method(model, x, eps, norm, clip_min=0.0, clip_max=1.0, y=y)
    theirs = ch_fgm(model, x, eps, norm, clip_min=0.0, clip_max=1.0, y=y)
    np.testing.assert_allclose(ours, theirs, atol=TOL)


@pytest.mark.parametrize("norm,eps,eps_iter", [(2, 0.5, 0.1), (np.inf, 0.05, 0.01)])
@pytest.mark.parametrize("options", [
    dict(rand_init=False),
    dict(rand_init=True, rand_minmax=0.0),
    dict(targeted=True, loss_fn=attacks.margin_loss),
])
def test_pgd_matches_cleverhans(model, x, labels, norm, eps, eps_iter, options):
    y = labels if options.get("targeted") else None
    kwargs = dict(clip_min=0.0, clip_max=1.0, y=y, **options)
    ours = attacks.projected_gradient_descent(model, x, eps, eps_iter, 5, norm, **kwargs)
    # CleverHans's default sanity check crashes under numpy 2 (ragged np.all).
    theirs = ch_pgd(model, x, eps, eps_iter, 5, norm, sanity_checks=False, **kwargs)
    np.testing.assert_allclose(ours, theirs, atol=TOL)


@pytest.mark.parametrize("norm,eps,eps_iter", [(2, 0.5, 0.1), (np.inf, 0.05, 0.01)])
def test_mim_matches_cleverhans(model, x, norm, eps, eps_iter):
    kwargs = dict(eps=eps, eps_iter=eps_iter, nb_iter=5, norm=norm, clip_min=0.0, clip_max=1.0)
    ours = attacks.momentum_iterative_method(model, x, **kwargs)
    theirs = ch_mim(model, x, sanity_checks=False, **kwargs)
    np.testing.assert_allclose(ours, theirs, atol=TOL)


# ---- PGD with random start ---------------------------------------------------------------

def test_pgd_l2_random_start_stays_in_ball_and_box_and_raises_loss(trained_model):
    model, data, targets = trained_model
    eps = 0.5
    x_adv = attacks.projected_gradient_descent(
        model, data, eps, eps / 4, 10, 2, clip_min=0.0, clip_max=1.0, y=targets, rand_init=True,
        rng=tf.random.Generator.from_seed(0))
    assert np.all(delta_norms(x_adv, data) <= eps + TOL)
    assert np.all((x_adv.numpy() >= 0.0) & (x_adv.numpy() <= 1.0))
    clean = attacks.cross_entropy_loss(targets, model(data)).numpy()
    adv = attacks.cross_entropy_loss(targets, model(x_adv)).numpy()
    assert adv.mean() > clean.mean() + 0.1
    assert np.all(adv >= clean - TOL)


def test_random_start_alone_samples_inside_the_ball(model, x):
    start = attacks.random_lp_vector(tf.shape(x), 2, 0.5, rng=tf.random.Generator.from_seed(3))
    norms = attacks.l2_norm(start).numpy()
    assert np.all(norms <= 0.5 + TOL) and np.all(norms > 0.4)  # mass near the sphere in 192-d
    start = attacks.random_lp_vector(tf.shape(x), np.inf, 0.1)
    assert np.all(np.abs(start.numpy()) <= 0.1)


def test_pgd_random_start_is_reproducible_with_seeded_generator(model, x):
    def run(seed):
        return attacks.projected_gradient_descent(
            model, x, 0.5, 0.1, 3, 2, clip_min=0.0, clip_max=1.0, rand_init=True,
            rng=tf.random.Generator.from_seed(seed)).numpy()

    np.testing.assert_array_equal(run(7), run(7))
    assert np.abs(run(7) - run(8)).max() > 1e-3


# ---- Compilation -------------------------------------------------------------------------

def test_attacks_run_inside_tf_function_and_agree_with_eager(model, x):
    traces = []
    rng = tf.random.Generator.from_seed(5)

    @tf.function
    def attack_step(batch):
        traces.append(1)
        return (attacks.fast_gradient_method(model, batch, 0.3, 2, clip_min=0.0, clip_max=1.0),
                attacks.projected_gradient_descent(model, batch, 0.3, 0.1, 4, 2, clip_min=0.0,
                                                   clip_max=1.0, rand_init=True, rng=rng),
                attacks.momentum_iterative_method(model, batch, 0.05, 0.01, 4, np.inf,
                                                  clip_min=0.0, clip_max=1.0))

    rng.reset_from_seed(5)
    compiled = attack_step(x)
    attack_step(x + 0.01)
    assert len(traces) == 1

    rng.reset_from_seed(5)
    tf.config.run_functions_eagerly(True)
    try:
        eager = (attacks.fast_gradient_method(model, x, 0.3, 2, clip_min=0.0, clip_max=1.0),
                 attacks.projected_gradient_descent(model, x, 0.3, 0.1, 4, 2, clip_min=0.0,
                                                    clip_max=1.0, rand_init=True, rng=rng),
                 attacks.momentum_iterative_method(model, x, 0.05, 0.01, 4, np.inf,
                                                   clip_min=0.0, clip_max=1.0))
    finally:
        tf.config.run_functions_eagerly(False)
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a, b, atol=TOL)


def test_standalone_pgd_traces_once_for_same_shapes(x):
    fresh = make_model(seed=4)  # a new model_fn: its first call must trace once
    before = pgd_module._pgd_compiled.experimental_get_tracing_count()
    for eps in (0.3, 0.4):  # new hyper-parameter values are tensors: no retrace
        attacks.projected_gradient_descent(fresh, x, eps, 0.1, 3, 2, clip_min=0.0, clip_max=1.0)
    assert pgd_module._pgd_compiled.experimental_get_tracing_count() - before == 1


# ---- Mixed precision ---------------------------------------------------------------------

def test_attacks_under_mixed_float16_model_are_float32(mixed_float16, x):
    model = make_model(seed=2, output_dtype="float32")
    assert model.layers[0].compute_dtype == "float16"
    y = tf.argmax(model(x), -1)
    assert attacks.loss_gradient(model, attacks.cross_entropy_loss, x, y, False).dtype == tf.float32
    for x_adv, eps in [
        (attacks.fast_gradient_method(model, x, 0.5, 2, clip_min=0.0, clip_max=1.0), 0.5),
        (attacks.projected_gradient_descent(model, x, 0.5, 0.2, 3, 2, clip_min=0.0, clip_max=1.0,
                                            rand_init=True), 0.5),
        (attacks.momentum_iterative_method(model, x, 0.5, 0.2, 3, 2, clip_min=0.0, clip_max=1.0), 0.5),
    ]:
        assert x_adv.dtype == tf.float32
        assert np.all(np.isfinite(x_adv.numpy()))
        norms = attacks.l2_norm(x_adv - x)
        assert norms.dtype == tf.float32
        assert np.all(norms.numpy() <= eps + TOL)
        assert np.any(norms.numpy() > 0)


# ---- Argument validation -----------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda m, x: attacks.fast_gradient_method(m, x, 0.1, 1), "norm must be np.inf or 2"),
    (lambda m, x: attacks.fast_gradient_method(m, x, -0.1, 2), "eps must be >= 0"),
    (lambda m, x: attacks.fast_gradient_method(m, x, 0.1, 2, clip_min=1.0, clip_max=0.0),
     "clip_min must be <= clip_max"),
    (lambda m, x: attacks.fast_gradient_method(m, x, 0.1, 2, targeted=True), "needs the target labels"),
    (lambda m, x: attacks.projected_gradient_descent(m, x, 0.3, -0.1, 3, 2), "eps_iter must be >= 0"),
    (lambda m, x: attacks.projected_gradient_descent(m, x, 0.3, 0.5, 3, 2), "eps_iter must be <= eps"),
    (lambda m, x: attacks.projected_gradient_descent(m, x, 0.3, 0.1, -1, 2), "nb_iter must be an integer"),
    (lambda m, x: attacks.projected_gradient_descent(m, x, 0.3, 0.1, 3, "fro"), "norm must be np.inf or 2"),
    (lambda m, x: attacks.momentum_iterative_method(m, x, nb_iter=2.5), "nb_iter must be an integer"),
    (lambda m, x: attacks.momentum_iterative_method(m, x, eps=-1.0), "eps must be >= 0"),
    (lambda m, x: attacks.clip_eta(x, 3, 0.1), "norm must be np.inf or 2"),
])
def test_bad_arguments_raise_value_error(model, x, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, x)


@pytest.mark.parametrize("name", ["fgm", "pgd", "mim", "deepfool", "cw"])
def test_every_attack_keeps_shape_dtype_box_and_ball_without_nan(trained_model, name):
    model, data, targets = trained_model
    eps = 0.5
    box = dict(clip_min=0.0, clip_max=1.0)
    x_adv = {
        "fgm": lambda: attacks.fast_gradient_method(model, data, eps, 2, y=targets, **box),
        "pgd": lambda: attacks.projected_gradient_descent(model, data, eps, 0.1, 10, 2, y=targets,
                                                          rand_init=True, **box),
        "mim": lambda: attacks.momentum_iterative_method(model, data, eps=eps, eps_iter=0.06, nb_iter=20,
                                                         norm=2, y=targets, **box),
        "deepfool": lambda: attacks.deepfool(model, data, max_iter=20, **box),
        "cw": lambda: attacks.carlini_wagner_l2(model, data, y=targets, max_iterations=20,
                                                binary_search_steps=2, **box),
    }[name]()
    assert x_adv.shape == data.shape and x_adv.dtype == data.dtype
    values = np.asarray(x_adv)
    assert np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0
    if name in ("fgm", "pgd", "mim"):  # the bounded attacks stay in the L2 ball
        assert np.all(delta_norms(x_adv, data) <= eps + 1e-5)
