"""AutoAttack's named versions (Croce & Hein 2020): the attacks each runs, in order, and the names
a custom version may choose from. Here, with no TensorFlow, so that attacks/autoattack.py runs
them and eval/config.py checks --autoattack_version and --autoattack_attacks before TensorFlow
loads, from one list."""
from __future__ import annotations

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr")
VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
