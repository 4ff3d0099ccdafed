"""JAX: jax.value_and_grad over the model's ``stateless_call`` for the input gradient, jax.jit for
the loop (a lax.while_loop inside, through keras.ops.while_loop)."""
from __future__ import annotations

import jax
import keras


STATIC_SHAPES = True  # a new batch size is a new compilation


def model_caller(model_fn):
    """A Keras model runs through ``stateless_call`` with its weights as arguments of the compiled
    function (not constants baked into it); any other callable is called as it is (closing over its
    weights)."""
    model = model_fn if isinstance(model_fn, keras.Model) else None
    if model is None:
        return (lambda: ()), (lambda params, x: model_fn(x))

    def get_params():  # read at each call: a model trained further is attacked with its new weights
        return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])

    def call(params, x):
        return model.stateless_call(params[0], params[1], x, training=False)[0]
    return get_params, call


def value_and_grad(f):
    g = jax.value_and_grad(f, has_aux=True)

    def run(x):
        (total, aux), grad = g(x)
        return total, aux, grad
    return run


def compile(fn, static_argnames=()):  # noqa: A001 - the backend's verb
    return jax.jit(fn, static_argnames=tuple(static_argnames))


def stop_gradient(x):
    return jax.lax.stop_gradient(x)
