"""The training loop, its configuration and one module per defense.

Kept import-light (no TensorFlow here) so that ``run.py`` can reject bad flags instantly.
"""
