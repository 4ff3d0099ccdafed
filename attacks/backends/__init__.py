"""The per-backend seam of the keras.ops attacks (attacks/keras_ops/): what differs between
TensorFlow, JAX and PyTorch is only how to take the loss's gradient with respect to the input, how
to call the model inside a compiled function, and how to compile the inner loop.

Each backend module defines:
    model_caller(model_fn) -> (get_params, call): call(get_params(), x) -> logits. For a Keras model
        on JAX, the params are its variables' current values and call is ``model.stateless_call``
        (the Keras 3 way to differentiate a model functionally); elsewhere params are () and call
        runs model_fn(x).
    STATIC_SHAPES: whether every new batch size compiles anew (JAX), so callers pad batches to a
        few sizes; TensorFlow relaxes the batch axis itself and PyTorch does not compile.
    value_and_grad(f) -> g: f(x) -> (total: scalar, aux); g(x) -> (total, aux, d total / d x).
    compile(fn, static_argnames) -> fn compiled: tf.function on TensorFlow, jax.jit on JAX,
        as it is on PyTorch (eager: the loop is a Python loop there).
    stop_gradient(x).
The attack code (keras.ops only) calls these through ``current()``.
"""
from __future__ import annotations

import importlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")


def name() -> str:
    """Keras's backend: "tensorflow", "jax" or "torch" (KERAS_BACKEND, read when keras loads)."""
    return keras.backend.backend()


def current():
    """The backend module for Keras's backend."""
    backend = name()
    if backend not in SUPPORTED:
        raise ValueError(f"the keras.ops attacks run on {', '.join(SUPPORTED)}; Keras runs on {backend!r}.")
    return importlib.import_module(f"attacks.backends.{backend}_backend")
