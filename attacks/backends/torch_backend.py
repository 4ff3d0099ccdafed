"""PyTorch: torch.autograd for the input gradient; the loop runs eagerly (keras.ops.while_loop is a
Python loop on this backend, and torch.compile of a 100-step loop costs more than it saves on CPU)."""
from __future__ import annotations

import torch


STATIC_SHAPES = False


def model_caller(model_fn):
    return (lambda: ()), (lambda params, x: model_fn(x))


def value_and_grad(f):
    def g(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            total, aux = f(x)
            (grad,) = torch.autograd.grad(total, x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        return total.detach(), _detach(aux), grad.detach()
    return g


def _detach(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value.detach() if isinstance(value, torch.Tensor) else value


def compile(fn, static_argnames=()):  # noqa: A001 - the backend's verb
    del static_argnames

    def run(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)
    return run


def stop_gradient(x):
    return x.detach()
