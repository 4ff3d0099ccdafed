"""The training loop, its configuration and one module per defense.

Kept import-light (no TensorFlow here) so that ``run.py`` can reject bad flags instantly.
"""


def train_model(*args, **kwargs):
    """Train your own Keras classifier with any registered defense: see training/api.py."""
    from training.api import train_model as train
    return train(*args, **kwargs)
