import keras
import numpy as np
import pytest

from models import build_classifier, count_params


@pytest.mark.parametrize("num_classes, width, expected", [
    (10, 1.0, 2_334_730), (100, 1.0, 2_749_540), (10, 0.25, 155_146), (100, 0.25, 258_916)])
def test_classifier_parameter_counts_match_table1(num_classes, width, expected):
    assert count_params(build_classifier(num_classes, (32, 32, 3), width)) == expected


def test_classifier_adapts_to_mnist_shape_and_returns_logits():
    model = build_classifier(10, (28, 28, 1), 0.25)
    logits = model(np.zeros((2, 28, 28, 1), np.float32))
    assert logits.shape == (2, 10)
    assert model.layers[-2].name == "gap"  # no softmax: the losses take logits


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier(10, (32, 32, 3), 0.125)
        assert model.get_layer("conv1").compute_dtype == "float16"
        assert model(np.zeros((1, 32, 32, 3), np.float32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("bad", [dict(num_classes=1), dict(width=0.0)])
def test_classifier_rejects_bad_arguments(bad):
    kwargs = dict(num_classes=10, input_shape=(32, 32, 3), width=1.0) | bad
    with pytest.raises(ValueError):
        build_classifier(**kwargs)


def test_features_view_shares_weights_and_returns_both_outputs():
    from models import with_features
    model = build_classifier(10, (32, 32, 3), 0.25)
    view = with_features(model)
    x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    features, logits = view(x)
    assert features.shape == (3, 128) and features.dtype == "float32"
    np.testing.assert_allclose(logits.numpy(), model(x).numpy(), atol=1e-6)
    assert {id(v) for v in view.trainable_variables} == {id(v) for v in model.trainable_variables}
