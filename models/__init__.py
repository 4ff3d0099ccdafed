"""Keras networks: the paper's classifier (Table 1) and, later, the attack generators."""
from models.classifier import build_classifier, count_params, with_features

__all__ = ["build_classifier", "count_params", "with_features"]
