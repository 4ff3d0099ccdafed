"""Every flag is declared once: generated from its config's ``setting`` field (name, type, default,
help, choices), so a flag's default cannot drift from its config's; one preset rule per mode."""
from __future__ import annotations

import dataclasses
import math

import pytest
from absl import flags

import run
from configs.settings import default_eps, flag_fields
from data.dataset import DataConfig
from eval.config import EVAL_PRESETS, EvalConfig
from study.report_config import ReportConfig
from study.options import Options as StudyOptions
from tests.test_cli import assert_one_line_error, run_py
from training.config import DefenseConfig, RunConfig, TrainConfig
from training.defenses import SETTINGS

FLAGS = flags.FLAGS
CONFIGS = (DataConfig, TrainConfig, RunConfig, ReportConfig, EvalConfig, StudyOptions, DefenseConfig,
           *SETTINGS.values())
# The flags that are no config's field: what to do, the presets, a deprecated alias, the run
# directories (a train's one or an evaluation's several), and the sweep's and study's own.
HAND_WRITTEN = {"mode", "preset", "mixed_precision", "defense", "run_dir", "root", "sweep", "seeds", "dry_run",
                "spec", "status"}


def _as_setting(field, flag_default):
    """The flag's default as its config takes it (a list flag's strings parsed)."""
    if field.metadata.get("kind") is tuple:
        return tuple(field.metadata["of"](v) for v in flag_default or ())
    return flag_default


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_each_generated_flag_has_its_settings_default_type_help_and_choices(cls):
    for field in flag_fields(cls):
        flag, meta = FLAGS[field.name], field.metadata
        assert _as_setting(field, flag.default) == field.default, field.name
        assert meta["help"] in flag.help, field.name
        if meta["choices"] is not None and meta["kind"] is not tuple:
            assert list(flag.parser.enum_values) == list(meta["choices"]), field.name
        elif meta["kind"] in (bool, int, float):
            assert flag.flag_type() == {bool: "bool", int: "int", float: "float"}[meta["kind"]], field.name


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_a_config_field_that_reads_another_configs_flag_has_its_default(cls):
    # EvalConfig's test_limit, batch_size and cache_dir are the data and training flags.
    for field in cls.__dataclass_fields__.values():
        if field.name in FLAGS and field.name not in ("run_dir", "defense", "own") and \
                field.default is not dataclasses.MISSING:
            owner = next(f for c in CONFIGS for f in flag_fields(c) if f.name == field.name)
            assert _as_setting(owner, FLAGS[field.name].default) == field.default, f"{cls.__name__}.{field.name}"


def test_every_flag_is_a_setting_or_one_of_the_few_hand_written():
    generated = {f.name for cls in CONFIGS for f in flag_fields(cls)}
    assert set(run._TOOL_FLAGS) == generated | HAND_WRITTEN
    assert not generated & HAND_WRITTEN


@pytest.fixture
def parsed():
    """run.py's flags parsed from a command line, and reset afterwards."""
    def parse(*args):
        FLAGS.unparse_flags()
        FLAGS(["run.py", *args])
    yield parse
    FLAGS.unparse_flags()


def test_a_training_preset_does_not_change_an_evaluation(parsed):
    parsed("--mode", "eval", "--run_dir", "r")
    plain = run._eval_config()
    assert plain == EvalConfig(run_dirs=("r",))
    parsed("--mode", "eval", "--preset", "smoke", "--run_dir", "r")
    assert run._eval_config() == plain  # smoke's batch size 64 and 512 test images are training's


def test_eval_refuses_a_training_preset_in_one_line(tmp_path):
    result = run_py("--mode", "eval", "--preset", "smoke", "--run_dir", str(tmp_path / "run"))
    assert_one_line_error(result, "--preset smoke", "--eval_preset")


def test_the_eval_preset_applies_to_eval_and_report_and_explicit_flags_win(parsed):
    parsed("--mode", "eval", "--eval_preset", "quick", "--run_dir", "r", "--cw_iters", "7")
    cfg = run._eval_config()
    quick = EVAL_PRESETS["quick"]
    assert (cfg.test_limit, cfg.attacks, cfg.autoattack_curve) == (quick["test_limit"], quick["attacks"],
                                                                  quick["autoattack_curve"])
    assert cfg.cw_iters == 7 and cfg.eval_preset == "quick"
    parsed("--mode", "train", "--eval_preset", "quick")
    data_cfg, *_ = run._configs()
    assert data_cfg.test_limit == 0  # an evaluation preset trains nothing differently


def test_the_report_reads_the_training_presets_test_subset_under_the_eval_preset(parsed):
    # --mode report --preset cpu_repro reports on the 500 test images its runs were trained with.
    parsed("--mode", "report", "--preset", "cpu_repro", "--root", "x")
    assert run._eval_config().test_limit == 500
    parsed("--mode", "report", "--preset", "cpu_repro", "--eval_preset", "quick", "--root", "x")
    assert run._eval_config().test_limit == EVAL_PRESETS["quick"]["test_limit"]


def test_the_training_preset_applies_to_training_and_explicit_flags_win(parsed):
    parsed("--mode", "train", "--preset", "smoke", "--batch_size", "32")
    data_cfg, train_cfg, _, run_cfg = run._configs()
    assert (data_cfg.test_limit, train_cfg.batch_size, train_cfg.epochs, run_cfg.log_every_steps) == (512, 32, 1, 4)


@pytest.mark.parametrize("args, fragments", [
    (["--curve_test_limit", "-1"], ["--curve_test_limit", ">= 0"]),
    (["--figure2_epochs", "0"], ["--figure2_epochs", ">= 1"]),
    (["--match_tolerance", "-0.5"], ["--match_tolerance", ">= 0"]),
    (["--match_benign", "most"], ["--match_benign", "most"]),
    (["--match_tolerance", "nan"], ["--match_tolerance", "finite"]),
])
def test_report_options_are_refused_before_any_data_loads(tmp_path, args, fragments):
    # --root names nothing: had the report started, it would have said so instead.
    result = run_py("--mode", "report", "--root", str(tmp_path / "nothing"), *args)
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize("args, fragments", [
    (["--seeds", "1,a"], ["--seeds", "integers"]),
    (["--sweep", "nothing=1"], ["--sweep", "nothing"]),
    (["--run_dir", "somewhere"], ["--run_dir"]),
])
def test_sweep_options_are_refused_before_anything_starts(tmp_path, args, fragments):
    result = run_py("--mode", "sweep", "--root", str(tmp_path / "root"), *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "root").exists()


def test_one_default_radius_per_norm():
    assert default_eps("2") == default_eps(2) == 0.5
    assert default_eps("inf") == default_eps(math.inf) == pytest.approx(8 / 255)
    assert DefenseConfig("rvs").resolved().eps == default_eps("inf")
    assert DefenseConfig("pgd").resolved().eps == default_eps("2")
    assert EvalConfig(run_dirs=(), autoattack_norm="inf").autoattack_radius == default_eps("inf")
    with pytest.raises(ValueError, match="norm"):
        default_eps("1")
