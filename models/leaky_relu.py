"""A leaky ReLU whose gradient is computed from its output, not its input.

Keras's ``LeakyReLU`` differentiates through TensorFlow's ``LeakyReluGrad(gradients, features)``,
which reads the activation's *input*: after a convolution that is the ``BiasAdd``, which then has
two consumers (the activation and its gradient). Where oneDNN's graph rewrites are on (x86 CPUs
with AVX-512, and wherever ``TF_ENABLE_ONEDNN_OPTS=1``), grappler's remapper fuses Conv2D +
BiasAdd + LeakyRelu into one op, deletes the BiasAdd the gradient still reads, and gives up on the
whole graph, printing on every training and evaluation

    E0000 ... meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply error:
    fanout 'gradient_tape/.../LeakyRelu/LeakyReluGrad' exist for missing node '.../BiasAdd'.

For a positive slope the output has the input's sign (zero and underflow included), so the
gradient ``upstream if y > 0 else slope * upstream`` is LeakyReluGrad's, bit for bit, read from
the output: the BiasAdd keeps one consumer, the fusion is valid, and the line never comes.
"""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pgn")
class LeakyReLU(layers.LeakyReLU):
    """``keras.layers.LeakyReLU`` (same name, same settings, no weights) with the gradient above."""

    def call(self, inputs):
        slope = self.negative_slope

        @ops.custom_gradient
        def leaky_relu(x):
            y = ops.leaky_relu(x, negative_slope=slope)

            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return ops.where(ops.greater(y, 0), upstream, upstream * ops.cast(slope, upstream.dtype))
            return y, grad
        return leaky_relu(inputs)
