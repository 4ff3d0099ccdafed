"""Each defense declares its settings once: the flags, a run's identity, sweeps and titles read them."""
from __future__ import annotations

import dataclasses
import sys

import pytest

from training import rundir
from training.config import DefenseConfig
from training.defenses import NAMES, SETTINGS, marker, settings_class, title
from training.defenses.settings import declared_fields
from study.sweep import Sweep, sweepable


def test_the_registry_loads_without_tensorflow():
    import subprocess
    code = ("import sys, run, training.defenses, study.report_tables; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_flag_default_is_its_declaration():
    import run  # noqa: F401 (defines the flags)
    from absl import flags
    for cls in (DefenseConfig, *SETTINGS.values()):
        for field in declared_fields(cls):
            assert flags.FLAGS[field.name].default == field.default, field.name
    assert flags.FLAGS["defense"].default == DefenseConfig.defense
    assert tuple(flags.FLAGS["defense"].parser.enum_values) == NAMES


def test_a_runs_identity_holds_the_shared_settings_and_its_defenses_only():
    flat = rundir.flatten_settings(defense=DefenseConfig("pgd", pgd_steps=3))
    assert flat == {"defense.defense": "pgd", "defense.eps": None, "defense.adv_coeff": 1.0,
                    "defense.gen_width": 1.0, "defense.pgd_steps": 3}
    assert rundir.setting_defaults(defense=DefenseConfig("pgd", pgd_steps=3))["defense.pgd_steps"] == 10
    assert set(rundir.flatten_settings(defense=DefenseConfig("none"))) == {
        "defense.defense", "defense.eps", "defense.adv_coeff", "defense.gen_width"}


def test_a_setting_of_another_defense_is_refused_and_own_settings_read_as_attributes():
    with pytest.raises(ValueError, match="--c_l is not a setting of --defense fgm"):
        DefenseConfig("fgm", c_l=5.0)
    cfg = DefenseConfig("pgn", c_l=5.0, gen_width=0.25)
    assert cfg.c_l == 5.0 and cfg.gen_width == 0.25 and cfg.own == settings_class("pgn")(c_l=5.0)
    assert dataclasses.replace(cfg, c_l=1.0).c_l == 1.0  # a sweep's replace reaches own settings
    with pytest.raises(AttributeError):
        cfg.pgd_steps


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(defense="pgd", pgd_steps=0), "--pgd_steps must be >= 1"),
    (dict(defense="fgm", adv_coeff=1.5), "--adv_coeff must be <= 1"),
    (dict(defense="rvs", rvs_norm="1"), "--rvs_norm must be one of 2, inf"),
    (dict(defense="fgm", eps=float("nan")), "--eps must be a finite number"),
    (dict(defense="pgn", pgn_inputs="grad,grad"), "--pgn_inputs"),
])
def test_declared_choices_and_bounds_are_enforced(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        DefenseConfig(**kwargs).validate()


def test_the_radius_follows_each_defenses_norm_in_one_place():
    assert DefenseConfig("rvs").resolved().eps == pytest.approx(8 / 255)
    assert DefenseConfig("rvs", rvs_norm="2").resolved().eps == 0.5
    assert DefenseConfig("l2l", l2l_norm="inf").resolved().eps == pytest.approx(8 / 255)
    assert DefenseConfig("pgd", eps=0.3).resolved().eps == 0.3


def test_a_sweep_varies_any_setting_of_its_defense_only():
    assert Sweep.parse("l2l_norm=2,inf", "l2l") == Sweep("l2l_norm", ("2", "inf"))
    assert Sweep.parse("pgd_steps=3,5", "pgd").values == (3, 5)
    assert "c_l" in sweepable("pgn") and "c_l" not in sweepable("fgm") and "lr" in sweepable("fgm")
    with pytest.raises(ValueError, match="cannot vary 'c_l'"):
        Sweep.parse("c_l=1,2", "fgm")


def test_titles_and_markers_come_from_the_declarations():
    from study.report_tables import DEFENSE_TITLES
    assert DEFENSE_TITLES == {n: SETTINGS[n].title for n in NAMES} and list(DEFENSE_TITLES)[0] == "none"
    assert title("pgd") == "PGD-AT" and title("unknown") == "unknown"
    assert len({marker(n) for n in NAMES}) == len(NAMES)
