"""How a defense declares its settings: one frozen dataclass of ``setting(...)`` fields per defense.

Each field is one setting: its name is the ``--flag`` (run.py generates the flag from it), its
default is written here once, and its metadata carries the help text, the choices or bounds that
``check_settings`` enforces, and the value type a sweep parses. A defense's class-level facts
(``name``, ``title`` for tables, ``marker`` for plots, ``trainer``: where its train step lives) are
``ClassVar``s. This module and every ``*_settings.py`` import no TensorFlow, so the command line
and the readers of run directories use them without loading it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

NORMS = ("2", "inf")  # the threat model's norm as a setting: L2 (this project's) or L-infinity


def setting(default, help: str, *, choices: tuple | None = None, kind: type | None = None,
            at_least: float | None = None, above: float | None = None, at_most: float | None = None,
            below: float | None = None):
    """A declared setting: its default, one line of help (shown by --help), and what a value must
    satisfy (one of ``choices``; >= at_least, > above, <= at_most, < below). ``kind`` is the value
    type when the default cannot say (None for "decided elsewhere")."""
    kind = kind or type(default)
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "kind": kind, "at_least": at_least, "above": above,
        "at_most": at_most, "below": below})


def declared_fields(cls_or_obj) -> tuple[dataclasses.Field, ...]:
    """The fields declared with ``setting`` (a command-line flag each)."""
    return tuple(f for f in dataclasses.fields(cls_or_obj) if "help" in f.metadata)


def check_settings(obj) -> None:
    """Raises ValueError, naming the flag, for the first declared setting of ``obj`` outside its
    choices or bounds, or a number that is not finite."""
    for f in declared_fields(obj):
        value, meta, flag = getattr(obj, f.name), f.metadata, f"--{f.name}"
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
        if meta["choices"] is not None and value not in meta["choices"]:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got '{value}'")
        for bound, fails, words in (("at_least", lambda v, b: v < b, ">="), ("above", lambda v, b: v <= b, ">"),
                                    ("at_most", lambda v, b: v > b, "<="), ("below", lambda v, b: v >= b, "<")):
            if meta[bound] is not None and fails(value, meta[bound]):
                raise ValueError(f"{flag} must be {words} {meta[bound]:g}, got {value}")


@dataclasses.dataclass(frozen=True)
class DefenseSettings:
    """A defense's own settings (subclasses add ``setting`` fields and set the ClassVars).

    Field names are global flags: each must be unique across defenses (the registry checks), so a
    defense prefixes its own (``pgn_update``, ``l2l_norm``). Settings several defenses use (eps,
    adv_coeff, gen_width) are ``training.config.DefenseConfig``'s, declared there once.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""      # in tables, legends and the speed table
    marker: ClassVar[str] = "."    # matplotlib marker of its curve (Figure 5)
    trainer: ClassVar[str] = ""    # "module:Class" of its train step, imported only to train
    # Settings worth a row of their own in the speed table, as "name=value" (benchmarks/step_time.py).
    benchmark_variants: ClassVar[tuple[str, ...]] = ()

    @property
    def norm(self) -> str:
        """The norm of the defense's threat model (a NORMS value); decides the default radius."""
        return "2"

    def validate(self) -> None:
        check_settings(self)
        self.check()

    def check(self) -> None:
        """Rules between settings, beyond each one's own choices and bounds; none by default."""
