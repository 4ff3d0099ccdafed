"""TensorFlow: tf.GradientTape for the input gradient, tf.function (a tf.while_loop inside) for the loop."""
from __future__ import annotations

import tensorflow as tf


STATIC_SHAPES = False


def model_caller(model_fn):
    # Variables are read inside the graph: a tf.function sees weight updates without retracing.
    return (lambda: ()), (lambda params, x: model_fn(x))


def value_and_grad(f):
    def g(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total, aux = f(x)
        # A model that ignores part of x has zero gradient there, not None.
        return total, aux, tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return g


def compile(fn, static_argnames=()):  # noqa: A001 - the backend's verb
    # Python (static) arguments are part of tf.function's trace key already.
    del static_argnames
    # autograph off: the loops are explicit (keras.ops.while_loop); Python `if`s here are on settings.
    return tf.function(fn, reduce_retracing=True, autograph=False)


def stop_gradient(x):
    return tf.stop_gradient(x)
