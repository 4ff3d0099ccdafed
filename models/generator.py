"""The perturbation generator G(grad, x, y) of the PGN paper (Table 1, Figure 1).

As the public reference code builds it, for an H x W x C input (H, W divisible by 4):

    y one-hot -> Dense 1024 -> concat y -> Dense (H/4)(W/4)128 -> reshape (H/4, W/4, 128)
    -> concat y tiled -> Conv2DTranspose 128, 3x3, stride 2 -> (H/2, W/2)
    -> concat y tiled -> Conv2DTranspose 128, 3x3, stride 2 -> (H, W)
    -> concat [grad, 2x - 1] -> Conv 128, 3x3 -> Conv C, 3x3, linear -> w

Leaky ReLU (0.2) after every layer but the last. ``w`` is the pre-tanh perturbation of eq. 5
(see ``training/defenses/pgn.py``), float32 even under mixed precision.

``inputs`` selects which of grad, image and label G sees (Appendix D's ablation): a missing input
is dropped from the graph, not zero-filled. Without the label there is no upsampling branch, and G
is the two convolutions over whatever image-sized inputs remain. ``width`` scales every filter and
unit count (the full generator costs more than the full classifier: CPU runs shrink it).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from models.leaky_relu import LeakyReLU  # a gradient grappler can fuse around (see the module)

GENERATOR_INPUTS = ("grad", "image", "label")
_SLOPE = 0.2


def build_generator(num_classes: int, input_shape=(32, 32, 3), inputs=GENERATOR_INPUTS,
                    width: float = 1.0, name: str = "generator",
                    kernel_initializer: str = "glorot_uniform") -> keras.Model:
    """G as a Keras model taking a list of the selected inputs, in GENERATOR_INPUTS order:
    grad [B, H, W, C] (float), image [B, H, W, C] in [0, 1], label one-hot [B, K].
    ``kernel_initializer`` of every dense and convolution layer: Keras's default, or the reference
    code's ``he_normal``."""
    inputs = tuple(inputs)
    unknown = set(inputs) - set(GENERATOR_INPUTS)
    if unknown or not inputs:
        raise ValueError(f"generator inputs must be a non-empty subset of {','.join(GENERATOR_INPUTS)}, "
                         f"got {','.join(inputs) or 'nothing'}")
    height, width_px, channels = input_shape
    if height % 4 or width_px % 4:
        raise ValueError(f"the generator upsamples twice by 2: image sides must be multiples of 4, "
                         f"got {height}x{width_px}")
    if width <= 0:
        raise ValueError(f"generator width must be > 0, got {width}")

    def units(n):
        return max(1, round(n * width))

    tensors = {
        "grad": keras.Input(shape=tuple(input_shape), name="grad"),
        "image": keras.Input(shape=tuple(input_shape), name="image"),
        "label": keras.Input(shape=(num_classes,), name="label"),
    }
    model_inputs = [tensors[key] for key in GENERATOR_INPUTS if key in inputs]
    image_sized = []
    if "label" in inputs:
        y = tensors["label"]
        h = _lrelu(layers.Dense(units(1024), kernel_initializer=kernel_initializer, name="fc1")(y))
        h = layers.Concatenate(name="fc1_y")([h, y])
        h = _lrelu(layers.Dense((height // 4) * (width_px // 4) * units(128),
                                         kernel_initializer=kernel_initializer, name="fc2")(h))
        h = layers.Reshape((height // 4, width_px // 4, units(128)), name="to_map")(h)
        for i in (1, 2):
            h = layers.Concatenate(name=f"up{i}_y")([h, _tile(y, h.shape[1], h.shape[2])])
            h = _lrelu(layers.Conv2DTranspose(units(128), 3, strides=2, padding="same",
                                                     kernel_initializer=kernel_initializer, name=f"up{i}")(h))
        image_sized.append(h)
    if "grad" in inputs:
        image_sized.append(tensors["grad"])
    if "image" in inputs:
        image_sized.append(layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(tensors["image"]))
    h = image_sized[0] if len(image_sized) == 1 else layers.Concatenate(name="joint")(image_sized)
    h = _lrelu(layers.Conv2D(units(128), 3, padding="same", kernel_initializer=kernel_initializer,
                                  name="conv1")(h))
    w = layers.Conv2D(channels, 3, padding="same", dtype="float32", kernel_initializer=kernel_initializer,
                      name="w")(h)
    return keras.Model(model_inputs, w, name=name)


def _lrelu(h):
    return LeakyReLU(negative_slope=_SLOPE)(h)


def _tile(y, height, width):
    """The one-hot label repeated over a height x width map, to concatenate with image features."""
    return ops.tile(ops.reshape(y, (-1, 1, 1, y.shape[-1])), (1, height, width, 1))
