"""Deterministic class-balanced subsets for --train_limit / --test_limit."""

from __future__ import annotations

import numpy as np

from .dataset import DatasetError

# Fixed on purpose: a subset must not change with the training seed, so that runs
# with different seeds (and the evaluation of their checkpoints) see the same data.
SUBSET_SEED = 1234


def balanced_subset(labels: np.ndarray, limit: int, num_classes: int, *,
                    split: str) -> np.ndarray:
    """Indices (sorted, i.e. in the split's own order) of `limit` examples.

    Per-class counts differ by at most 1; the classes with the lowest ids get the
    extra example. A class with fewer examples than its share gives all it has and
    the others make up the difference (only possible for unbalanced splits such as
    SVHN's). Within a class the examples are the first ones of a fixed permutation
    of that class, so a smaller subset is contained in a larger one.
    """
    n = len(labels)
    if limit < 0 or limit > n:
        raise DatasetError(f"{split}_limit={limit} is outside [0, {n}] for the {split} "
                           f"split of {n} examples: lower it, or use 0 for all of it")
    counts = np.bincount(labels, minlength=num_classes)
    level = _fill_level(counts, limit)
    take = np.minimum(counts, level)
    extra = limit - int(take.sum())
    take[np.flatnonzero(counts > level)[:extra]] += 1
    chosen = []
    for class_id in np.flatnonzero(take):
        members = np.flatnonzero(labels == class_id)
        order = np.random.default_rng([SUBSET_SEED, int(class_id)]).permutation(len(members))
        chosen.append(members[order[:take[class_id]]])
    if not chosen:
        return np.zeros([0], np.int64)
    return np.sort(np.concatenate(chosen))


def _fill_level(counts: np.ndarray, limit: int) -> int:
    """The largest t with sum(min(counts, t)) <= limit (water filling)."""
    low, high = 0, int(counts.max(initial=0))
    while low < high:
        mid = (low + high + 1) // 2
        if int(np.minimum(counts, mid).sum()) <= limit:
            low = mid
        else:
            high = mid - 1
    return low
