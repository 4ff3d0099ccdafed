"""The paper's classifier (Table 1): CleverHans's ``ModelAllConvolutional``, nb_filters=64.

3x3 same convolutions 64, 128, avgpool, 128, 256, avgpool, 256, 512, avgpool, a 3x3
convolution to K classes, global average pooling. Leaky ReLU (slope 0.2) after every
convolution, the last one included; He-normal initialisation. 2,334,730 parameters for
K=10 and 2,749,540 for K=100 at width 1.

``width`` multiplies every filter count but the last (Figure 5's capacity axis); width 0.25
gives 155,146 parameters for K=10, small enough to train on a CPU.

The model returns float32 logits (softmax is left to the losses) even under the
``mixed_float16`` policy. ``with_features`` gives a view of the same layers that returns the
pooled penultimate features too, from one forward pass (RvS's optimal-transport term needs them).
"""
from __future__ import annotations

import keras
from keras import layers

from models.leaky_relu import LeakyReLU  # a gradient grappler can fuse around (see the module)

# (filters at width 1, average-pool after this convolution?)
_TABLE1_BLOCKS = ((64, False), (128, True), (128, False), (256, True), (256, False), (512, True))
_LEAKY_SLOPE = 0.2
MIN_USEFUL_FILTERS = 8  # below about this many filters a layer learns little (training warns)


def min_filters(width: float) -> int:
    """The filter count of the classifier's narrowest scaled layer at ``width``."""
    return min(max(1, round(filters * width)) for filters, _ in _TABLE1_BLOCKS)


def _conv(filters: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=name)


def build_classifier(num_classes: int, input_shape=(32, 32, 3), width: float = 1.0,
                     name: str = "classifier") -> keras.Model:
    """Builds the Table 1 classifier; ``model(x)`` maps images in [0, 1] to float32 logits."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    h = inputs
    for i, (filters, pool) in enumerate(_TABLE1_BLOCKS):
        h = _conv(max(1, round(filters * width)), f"conv{i + 1}")(h)
        h = LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"lrelu{i + 1}")(h)
        if pool:
            h = layers.AveragePooling2D(2, name=f"pool{i + 1}")(h)
    h = _conv(num_classes, "conv_logits")(h)
    h = LeakyReLU(negative_slope=_LEAKY_SLOPE, name="lrelu_logits")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    # Logits stay float32 under mixed precision: softmax and CE in float16 overflow.
    logits = layers.Activation("linear", dtype="float32", name="logits")(h)
    return keras.Model(inputs, logits, name=name)


def with_features(classifier: keras.Model) -> keras.Model:
    """A model sharing ``classifier``'s layers and weights whose call returns (features, logits):
    features are the global average of the last pooled feature map, the input of the final
    convolution (512 channels at width 1), in float32."""
    pooled = classifier.get_layer("pool6").output
    features = layers.GlobalAveragePooling2D(dtype="float32", name="features")(pooled)
    return keras.Model(classifier.input, [features, classifier.output], name=f"{classifier.name}_features")


def count_params(model: keras.Model) -> int:
    return int(sum(int(v.numpy().size) for v in model.trainable_variables))
