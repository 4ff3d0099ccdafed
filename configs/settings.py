"""How a setting is declared: a dataclass field made with ``setting(...)``, one place for its name,
type, default, help and choices, from which run.py generates its ``--flag``.

The defenses' settings (training/defenses/*_settings.py), the data, training, run-directory and
evaluation configs and the report's options all declare theirs this way, so that a flag's default
is the config's default by construction (tests/test_flags.py checks every one). Also here, once:
the finite-number check every config uses, and the threat model's default radius per norm.
This module imports no TensorFlow (nor numpy), so the command line checks flags instantly.
"""
from __future__ import annotations

import dataclasses
import math

NORMS = ("2", "inf")  # the threat model's norm as a setting: L2 (this project's) or L-infinity
# The radius a norm gets when none is given: L2 0.5 on CIFAR-10 (RobustBench's L2 radius, this
# project's threat model) and L-inf 8/255 (the L2L and RvS papers', RobustBench's L-inf radius).
_DEFAULT_EPS = {"2": 0.5, "inf": 8 / 255}


def default_eps(norm) -> float:
    """The radius of ``norm``'s threat model when no eps is given: 0.5 for L2, 8/255 for L-inf.
    ``norm`` as a setting ("2", "inf") or as the attacks take it (2, np.inf)."""
    key = "inf" if norm in ("inf", math.inf) else "2" if norm in ("2", 2) else None
    if key is None:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return _DEFAULT_EPS[key]


def check_finite(name: str, value) -> None:
    """Raises ValueError naming ``--name`` if ``value`` (a number or a list of them) is nan or
    infinite: such a value parses as a number but means nothing as a setting, and would train
    (or fail) far from the flag."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"--{name} must be a finite number, got {v}")


def setting(default, help: str, *, choices: tuple | None = None, kind: type | None = None,
            of: type | None = None, repeated: bool = False, at_least: float | None = None,
            above: float | None = None, at_most: float | None = None, below: float | None = None):
    """A declared setting: its default, one line of help (shown by --help), and what a value must
    satisfy (one of ``choices``; >= at_least, > above, <= at_most, < below). ``kind`` is the value
    type when the default cannot say (None for "decided elsewhere"). A tuple setting gives its
    items' type as ``of``; its flag takes them comma-separated, or one per repetition of the flag
    if ``repeated`` (for values that may hold commas, such as paths)."""
    kind = kind or type(default)
    if kind is tuple and of is None:
        raise TypeError("a tuple setting names its items' type: setting(..., of=str)")
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "kind": kind, "of": of, "repeated": repeated, "at_least": at_least,
        "above": above, "at_most": at_most, "below": below})


def declared_fields(cls_or_obj) -> tuple[dataclasses.Field, ...]:
    """The fields declared with ``setting`` (a command-line flag each)."""
    return tuple(f for f in dataclasses.fields(cls_or_obj) if "help" in f.metadata)


def flag_fields(cls) -> tuple[dataclasses.Field, ...]:
    """The settings of ``cls`` that are flags: its declared fields and declared init-only
    variables (DataConfig's cache_dir: a flag that changes no pixel, so no field of the record)."""
    return tuple(f for f in cls.__dataclass_fields__.values() if "help" in f.metadata)


def check_settings(obj) -> None:
    """Raises ValueError, naming the flag, for the first declared setting of ``obj`` outside its
    choices or bounds, or a number that is not finite."""
    for f in declared_fields(obj):
        value, meta, flag = getattr(obj, f.name), f.metadata, f"--{f.name}"
        if value is None:
            continue
        check_finite(f.name, value)
        if meta["choices"] is not None and value not in meta["choices"]:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got '{value}'")
        for bound, fails, words in (("at_least", lambda v, b: v < b, ">="), ("above", lambda v, b: v <= b, ">"),
                                    ("at_most", lambda v, b: v > b, "<="), ("below", lambda v, b: v >= b, "<")):
            if meta[bound] is not None and fails(value, meta[bound]):
                raise ValueError(f"{flag} must be {words} {meta[bound]:g}, got {value}")
