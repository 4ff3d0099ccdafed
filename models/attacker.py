"""The attacker network A of L2L ("Learning to Defend by Learning to Attack", docs/methods.md section 3).

Three sizes, as the public L2L code's ``attacker.py`` defines them (``size``):

- ``wide`` (``WideAttacker``, the one all four public training scripts build, so the default):
  four full-resolution residual blocks, described below;
- ``two_layer`` (``Two_Layer_Attacker``): the same with two blocks, 64 -> 128 -> 64;
- ``slim`` (``SlimAttacker``): Conv 128, 3x3, stride 2 (no bias) + BN + ReLU at half resolution,
  two blocks 128 -> 256 -> 128, BN, a 4x4 stride-2 transposed convolution to 16 channels (no bias)
  + BN + ReLU back at full resolution, concatenated with the input, then Conv C, 3x3 (no bias),
  times one learned scale initialised at 5 (the public code's ``scale_last``, which only the slim
  attacker applies).

The wide attacker, for an H x W x C input:

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
ATTACKER_SIZES = ("slim", "two_layer", "wide")
_BLOCK_WIDTHS = {"wide": (64, 128, 256, 128, 64), "two_layer": (64, 128, 64), "slim": (128, 256, 128)}
_SLIM_UPSAMPLED = 16   # the slim attacker's channels after its transposed convolution
_SLIM_SCALE = 5.0      # its learned output scale's initial value
_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1: running stats follow the attacker within tens of steps


def build_attacker(input_shape=(32, 32, 3), inputs=ATTACKER_INPUTS, width: float = 1.0,
                   name: str = "attacker", size: str = "wide") -> keras.Model:
    """A as a Keras model taking a list of the selected inputs, in ATTACKER_INPUTS order:
    image [B, H, W, C] in [0, 1], grad [B, H, W, C] (scaled to [-1, 1]). Returns h [B, H, W, C].
    ``size``: one of ATTACKER_SIZES (the slim one needs even H and W)."""
    inputs = tuple(inputs)
    if not inputs or set(inputs) - set(ATTACKER_INPUTS) or len(set(inputs)) != len(inputs):
        raise ValueError(f"attacker inputs must be a non-empty subset of {','.join(ATTACKER_INPUTS)}, "
                         f"got {','.join(inputs) or 'nothing'}")
    if width <= 0:
        raise ValueError(f"attacker width must be > 0, got {width}")
    if size not in ATTACKER_SIZES:
        raise ValueError(f"attacker size must be one of {', '.join(ATTACKER_SIZES)}, got '{size}'")
    if size == "slim" and (input_shape[0] % 2 or input_shape[1] % 2):
        raise ValueError(f"the slim attacker halves and restores the resolution: H and W must be even, "
                         f"got {tuple(input_shape)}")

    def filters(n):
        return max(1, round(n * width))

    model_inputs = [keras.Input(shape=tuple(input_shape), name=key)
                    for key in ATTACKER_INPUTS if key in inputs]
    h = model_inputs[0] if len(model_inputs) == 1 else layers.Concatenate(name="joint")(model_inputs)
    widths = _BLOCK_WIDTHS[size]
    joint = h
    h = layers.Conv2D(filters(widths[0]), 3, strides=2 if size == "slim" else 1, padding="same", use_bias=False,
                      name="stem")(h)
    h = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=1e-3, synchronized=True, name="stem_bn")(h)
    h = layers.ReLU(name="stem_relu")(h)
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        h = _residual_block(h, filters(n_in), filters(n_out), f"block{i + 1}")
    h = _bn(h, "out_bn")
    if size != "slim":
        out = layers.Conv2D(input_shape[-1], 3, padding="same", dtype="float32", name="h")(h)
        return keras.Model(model_inputs, out, name=name)
    h = layers.Conv2DTranspose(filters(_SLIM_UPSAMPLED), 4, strides=2, padding="same", use_bias=False,
                               name="upsample")(h)
    h = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=1e-3, synchronized=True, name="upsample_bn")(h)
    h = layers.ReLU(name="upsample_relu")(h)
    h = layers.Concatenate(name="with_input")([h, joint])
    h = layers.Conv2D(input_shape[-1], 3, padding="same", use_bias=False, dtype="float32", name="h_unscaled")(h)
    out = _LearnedScale(_SLIM_SCALE, dtype="float32", name="h")(h)
    return keras.Model(model_inputs, out, name=name)


class _LearnedScale(layers.Layer):
    """h * s with one trainable scalar s (the slim attacker's ``scale_last``)."""

    def __init__(self, initial: float, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial), name="scale")

    def call(self, h):
        return h * self.scale

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


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
