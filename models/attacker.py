"""The attacker network A of L2L ("Learning to Defend by Learning to Attack", methods.md section 3).

As the public L2L code builds its ``WideAttacker``, for an H x W x C input:

    concat of the selected inputs [x, g / max|g|]  (2C channels; C for "naive" L2L)
    -> Conv 64, 3x3 (no bias) + BN + ReLU
    -> four pre-activation residual blocks 64 -> 128 -> 256 -> 128 -> 64
       (BN, PReLU, Conv 3x3, BN, PReLU, Conv 3x3; a 1x1 convolution on the shortcut when the
       width changes, which it does in all four)
    -> BN -> Conv C, 3x3 -> h

``h`` is unbounded; ``training/defenses/l2l.py`` maps it into the eps-ball. Spatial size is kept
throughout (stride 1). Details kept from the public code: the batch norms inside the blocks and
the last one have no scale or offset (``affine=False``), PReLU has one slope shared by all units
(PyTorch's default, initialised at 0.25), the block convolutions start from Xavier-uniform with
gain sqrt(2), and the batch-norm momentum and epsilon are PyTorch's (0.1 -> Keras 0.9; 1e-5, 1e-3
for the stem). The batch norms are ``synchronized``: under ``tf.distribute`` they use the
global batch's statistics, as one device would. ``h`` is float32 under mixed precision. ``width`` scales every filter count but
the output's (the full attacker costs more than the full classifier: CPU runs shrink it).
"""
from __future__ import annotations

import itertools

import keras
from keras import layers

ATTACKER_INPUTS = ("image", "grad")
_BLOCK_WIDTHS = (64, 128, 256, 128, 64)
_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1: running stats follow the attacker within tens of steps


def build_attacker(input_shape=(32, 32, 3), inputs=ATTACKER_INPUTS, width: float = 1.0,
                   name: str = "attacker") -> keras.Model:
    """A as a Keras model taking a list of the selected inputs, in ATTACKER_INPUTS order:
    image [B, H, W, C] in [0, 1], grad [B, H, W, C] (scaled to [-1, 1]). Returns h [B, H, W, C]."""
    inputs = tuple(inputs)
    if not inputs or set(inputs) - set(ATTACKER_INPUTS) or len(set(inputs)) != len(inputs):
        raise ValueError(f"attacker inputs must be a non-empty subset of {','.join(ATTACKER_INPUTS)}, "
                         f"got {','.join(inputs) or 'nothing'}")
    if width <= 0:
        raise ValueError(f"attacker width must be > 0, got {width}")

    def filters(n):
        return max(1, round(n * width))

    model_inputs = [keras.Input(shape=tuple(input_shape), name=key)
                    for key in ATTACKER_INPUTS if key in inputs]
    h = model_inputs[0] if len(model_inputs) == 1 else layers.Concatenate(name="joint")(model_inputs)
    h = layers.Conv2D(filters(_BLOCK_WIDTHS[0]), 3, padding="same", use_bias=False, name="stem")(h)
    h = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=1e-3, synchronized=True, name="stem_bn")(h)
    h = layers.ReLU(name="stem_relu")(h)
    for i, (n_in, n_out) in enumerate(itertools.pairwise(_BLOCK_WIDTHS)):
        h = _residual_block(h, filters(n_in), filters(n_out), f"block{i + 1}")
    h = _bn(h, "out_bn")
    out = layers.Conv2D(input_shape[-1], 3, padding="same", dtype="float32", name="h")(h)
    return keras.Model(model_inputs, out, name=name)


def _bn(h, name):
    """Batch norm without scale and offset (the public code's ``affine=False``)."""
    return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=1e-5, center=False, scale=False,
                                     synchronized=True, name=name)(h)


def _prelu(h, name):
    return layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2, 3],
                        name=name)(h)


def _residual_block(x, n_in, n_out, name):
    """Pre-activation block: BN, PReLU, conv, BN, PReLU, conv, plus the (1x1-projected) input."""
    xavier_relu = keras.initializers.VarianceScaling(2.0, "fan_avg", "uniform")  # Xavier, gain sqrt(2)
    h = _prelu(_bn(x, f"{name}_bn1"), f"{name}_act1")
    h = layers.Conv2D(n_out, 3, padding="same", kernel_initializer=xavier_relu, name=f"{name}_conv1")(h)
    h = _prelu(_bn(h, f"{name}_bn2"), f"{name}_act2")
    h = layers.Conv2D(n_out, 3, padding="same", kernel_initializer=xavier_relu, name=f"{name}_conv2")(h)
    shortcut = x
    if n_in != n_out:
        shortcut = layers.Conv2D(n_out, 1, name=f"{name}_shortcut")(x)
    return layers.Add(name=f"{name}_add")([h, shortcut])
