"""RvS's perturbation generator: noise in, a raw perturbation out (docs/methods.md section 4).

As the RvS public code builds it (model.py, ``attack``), for an H x W x C image (H, W divisible by 4):

    z ~ N(0, I_640) -> Dense (H/4)(W/4)64, linear -> reshape (H/4, W/4, 64)
    -> Conv2DTranspose 32, 4x4, stride 2 + BN + leaky ReLU 0.2 -> (H/2, W/2)
    -> Conv2DTranspose 16, 4x4, stride 2 + BN + leaky ReLU 0.2 -> (H, W)
    -> Conv C, 4x4 same -> delta (unbounded; the defense clips it to the eps-ball)

No image, label or classifier gradient enters: the same z gives the same perturbation for any
image. As in the public code the convolutions have no bias (the transposed ones feed batch norm,
which has its own) and batch-norm moving averages decay at 0.9; the batch norms are
``synchronized`` (global-batch statistics under ``tf.distribute``). ``width`` scales the 64, 32 and
16; the output is float32 even under mixed precision, since the perturbation is clipped and added
to float32 images.
"""
from __future__ import annotations

import keras
from keras import layers

from models.leaky_relu import LeakyReLU  # a gradient grappler can fuse around (see the module)

_SLOPE = 0.2


def build_noise_generator(z_dim: int = 640, image_shape=(32, 32, 3), width: float = 1.0,
                          name: str = "noise_generator") -> keras.Model:
    """G(z) as a Keras model: z [B, z_dim] -> raw perturbation [B, H, W, C] (float32)."""
    height, width_px, channels = image_shape
    if height % 4 or width_px % 4:
        raise ValueError(f"the generator upsamples twice by 2: image sides must be multiples of 4, "
                         f"got {height}x{width_px}")
    if z_dim < 1:
        raise ValueError(f"z_dim must be >= 1, got {z_dim}")
    if width <= 0:
        raise ValueError(f"generator width must be > 0, got {width}")

    def units(n):
        return max(1, round(n * width))

    z = keras.Input(shape=(z_dim,), name="z")
    h = layers.Dense((height // 4) * (width_px // 4) * units(64), name="fc")(z)
    h = layers.Reshape((height // 4, width_px // 4, units(64)), name="to_map")(h)
    for i, filters in enumerate((32, 16), start=1):
        h = layers.Conv2DTranspose(units(filters), 4, strides=2, padding="same", use_bias=False,
                                   kernel_initializer="he_normal", name=f"up{i}")(h)
        h = layers.BatchNormalization(momentum=0.9, synchronized=True, name=f"up{i}_bn")(h)  # decay .9, as the public code
        h = LeakyReLU(negative_slope=_SLOPE, name=f"up{i}_lrelu")(h)
    delta = layers.Conv2D(channels, 4, padding="same", use_bias=False, kernel_initializer="he_normal",
                          dtype="float32", name="delta")(h)
    return keras.Model(z, delta, name=name)
