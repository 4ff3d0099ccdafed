"""The registry of defenses: ``--defense NAME`` -> its declared settings and the class that trains it.

A defense is two modules: ``<module>_settings.py`` declares its settings (defaults, help, choices,
title, plot marker; no TensorFlow) and ``<module>.py`` trains it. Adding one is those two files and
one line in ``_MODULES``: the command line, sweeps, the report and the speed table read the rest
from the declaration. Importing this package loads no TensorFlow; ``defense_class`` imports a
defense's train step only when asked.
"""
from __future__ import annotations

import importlib

from training.defenses.settings import DefenseSettings, declared_fields

# One line per defense module, in the order tables list them.
_MODULES = (
    "clean",
    "gradient_attacks",
    "fgsm_rs",
    "trades",
    "pgn",
    "l2l",
    "rvs",
)


def _collect() -> dict[str, type[DefenseSettings]]:
    registry: dict[str, type[DefenseSettings]] = {}
    owner: dict[str, str] = {}
    for module in _MODULES:
        for cls in importlib.import_module(f"training.defenses.{module}_settings").DEFENSES:
            if cls.name in registry:
                raise RuntimeError(f"two defenses are named '{cls.name}'")
            for f in declared_fields(cls):  # each setting is one global flag
                if f.name in owner:
                    raise RuntimeError(f"setting '{f.name}' is declared by both {owner[f.name]} and {cls.name}")
                owner[f.name] = cls.name
            registry[cls.name] = cls
    return registry


SETTINGS: dict[str, type[DefenseSettings]] = _collect()
NAMES: tuple[str, ...] = tuple(SETTINGS)


def settings_class(name: str) -> type[DefenseSettings]:
    if name not in SETTINGS:
        raise ValueError(f"unknown --defense '{name}': choose one of {', '.join(NAMES)}")
    return SETTINGS[name]


def title(name: str) -> str:
    """The defense's display name in tables and legends (an unknown name as it is)."""
    return SETTINGS[name].title if name in SETTINGS else name


def marker(name: str) -> str:
    return SETTINGS[name].marker if name in SETTINGS else "."


def defense_class(name: str):
    """The ``training.defenses.base.Defense`` subclass that trains ``name`` (imports TensorFlow)."""
    module, _, cls = settings_class(name).trainer.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_defense(classifier, cfg, train, rng):
    """The defense ``cfg`` (a ``training.config.DefenseConfig``) names, built on ``classifier``."""
    return defense_class(cfg.defense)(classifier, cfg, train, rng)


__all__ = ["NAMES", "SETTINGS", "DefenseSettings", "defense_class", "make_defense", "marker", "settings_class",
           "title"]
