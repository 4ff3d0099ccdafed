"""How a defense declares its settings: one frozen dataclass of ``setting(...)`` fields per defense
(configs/settings.py's mechanism, which every config's flags use).

Each field is one setting: its name is the ``--flag`` (run.py generates the flag from it), its
default is written here once, and its metadata carries the help text, the choices or bounds that
``check_settings`` enforces, and the value type a sweep parses. A defense's class-level facts
(``name``, ``title`` for tables, ``marker`` for plots, ``trainer``: where its train step lives) are
``ClassVar``s. This module and every ``*_settings.py`` import no TensorFlow, so the command line
and the readers of run directories use them without loading it.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

# The declaration mechanism is configs/settings.py's, shared with the data, training, run and
# evaluation configs; re-exported here, where the defenses' *_settings.py import it from.
from configs.settings import NORMS, check_settings, declared_fields, setting

__all__ = ["NORMS", "DefenseSettings", "check_settings", "declared_fields", "setting"]


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
