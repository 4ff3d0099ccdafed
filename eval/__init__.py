"""Evaluation of trained runs as the PGN paper does it (sections 4.2-4.4), plus masking checks.

Kept import-light (no TensorFlow here) so that ``run.py`` can reject bad flags instantly.
"""


def evaluate_model(*args, **kwargs):
    """Robust accuracy of your own Keras model (AutoAttack, the paper's attacks): see eval/api.py."""
    from eval.api import evaluate_model as evaluate
    return evaluate(*args, **kwargs)
