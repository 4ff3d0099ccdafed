"""Evaluation of trained runs as the PGN paper does it (sections 4.2-4.4), plus masking checks.

Kept import-light (no TensorFlow here) so that ``run.py`` can reject bad flags instantly.
"""
