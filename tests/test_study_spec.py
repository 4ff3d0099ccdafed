"""Study specs (study/spec.py): what a spec plans, and every fault as one line naming key and file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.spec import SpecError, load
from tests.test_cli import ROOT, assert_one_line_error, run_py

RESULTS = ROOT / "docs" / "results"
MINIMAL = """
[study]
dataset = "folder:/nonexistent"
seeds = [0, 1, 2]
[[arms]]
defense = "none"
[[arms]]
defense = "pgn"
settings = { pgn_grad_scale = "unit" }
sweep = { c_l = [0.3, 1] }
table = 1
[matching]
target = 0.72
stop_at_benign = 0.72
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_a_spec_plans_table_seeds_then_curve_values_named_as_sweeps_name_them(tmp_path):
    spec = load(_spec(tmp_path, MINIMAL))
    runs = spec.runs(tmp_path)
    assert [r.name for r in runs] == [
        "none-seed0", "pgn-pgn_grad_scaleunit-c_l1-seed0", "none-seed1", "pgn-pgn_grad_scaleunit-c_l1-seed1",
        "none-seed2", "pgn-pgn_grad_scaleunit-c_l1-seed2", "pgn-pgn_grad_scaleunit-c_l0.3-seed0"]
    # The curve seed trains to its end; the other table seeds stop at the matched accuracy.
    assert [r.stop_at_benign for r in runs] == [0.0, 0.0, 0.72, 0.72, 0.72, 0.72, 0.0]
    configs = spec.configs(runs[-1])
    assert configs["defense"]["c_l"] == 0.3 and configs["defense"]["pgn_grad_scale"] == "unit"
    assert configs["train"]["seed"] == 0 and configs["run"]["run_dir"] == str(tmp_path / runs[-1].name)


def test_max_epochs_lengthens_only_the_runs_that_stop_at_the_target(tmp_path):
    # A table seed that has not reached the clean network's accuracy by training.epochs trains on
    # (the optimizer has no schedule tied to the epoch count); the curve seed keeps its length.
    spec = load(_spec(tmp_path, MINIMAL.replace("[matching]", "[training]\nepochs = 8\n[matching]\nmax_epochs = 12")))
    runs = spec.runs(tmp_path)
    epochs = {r.name: spec.configs(r)["train"]["epochs"] for r in runs}
    assert epochs == {r.name: (12 if r.stop_at_benign else 8) for r in runs}
    assert epochs["none-seed0"] == 8 and epochs["none-seed1"] == 12 and epochs["pgn-pgn_grad_scaleunit-c_l0.3-seed0"] == 8


@pytest.mark.parametrize("change, fragments", [
    (("stop_at_benign = 0.72", "max_epochs = 12"), ["matching.max_epochs", "stop_at_benign"]),
    (("[matching]", "[training]\nepochs = 8\n[matching]\nmax_epochs = 6"), ["matching.max_epochs", "below"]),
    (("[matching]", "[matching]\ncolour = 1"), ["matching.colour"]),
    (("[[arms]]\ndefense = \"none\"", "[[arms]]\ndefense = \"none\"\nsettings = { c_l = 1 }"),
     ["arms[0].settings.c_l", "not a setting of defense none"]),
    (("seeds = [0, 1, 2]", "seeds = [0, \"one\"]"), ["study.seeds"]),
    (("target = 0.72", "target = true"), ["matching.target"]),
    (("table = 1", "table = 5"), ["arms[1].table"]),
    (("[matching]", "[training]\nepochs = \"ten\"\n[matching]"), ["training.epochs", "int"]),
    (("[matching]", "[training]\nseed = 3\n[matching]"), ["training.seed"]),
    (("[matching]", "[evaluation]\nattacks = [\"laser\"]\n[matching]"), ["evaluation.attacks", "laser"]),
    (("target = 0.72", "target = \"lowest\""), ["matching.stop_at_benign"]),
])
def test_spec_faults_name_the_key_and_the_file(tmp_path, change, fragments):
    path = _spec(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(SpecError) as err:
        load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_bad_spec_is_one_line_and_exit_2_from_the_command_line_with_nothing_started(tmp_path):
    path = _spec(tmp_path, MINIMAL.replace("[matching]", "[matching]\ncolour = 1"))
    root = tmp_path / "root"
    result = run_py("--mode", "study", "--spec", str(path), "--root", str(root), timeout=120)
    assert_one_line_error(result, "matching.colour", str(path))
    assert not root.exists()


def test_the_shipped_studies_load_and_find_the_committed_reproductions_runs():
    smoke = load(ROOT / "studies" / "smoke.toml")
    assert len(smoke.arms) == 2 and smoke.seeds == (0, 1)
    full = load(ROOT / "studies" / "cpu_full.toml")
    names = {r.name for r in full.runs(Path("R"))}
    report = json.loads((RESULTS / "cifar10-cpu-full" / "report.json").read_text())
    evaluated = {r["run"] for e in report["table"].values() for r in e["rows"]} | \
        {p["run"] for p in report["curve_points"]}
    assert evaluated <= names  # every run the committed report evaluated is one the spec plans
    assert full.source_name() == "none-seed3"
    cpu = load(ROOT / "studies" / "cpu.toml")
    report = json.loads((RESULTS / "cifar10-cpu" / "report.json").read_text())
    assert {p["run"] for p in report["curve_points"]} == {r.name for r in cpu.runs(Path("R"))}
    c100 = load(ROOT / "studies" / "cifar100.toml")
    assert c100.dataset.startswith("npz:") and c100.report_config().dataset_label == "CIFAR-100 (npz copy)"
    names = [r.name for r in c100.runs(Path("R"))]
    assert names[:6] == ["none-seed0", "none-seed3", "fgm-eps0.02-seed0", "pgn-c_l50-seed0", "pgd-eps0.02-seed0",
                         "pgn-pgn_grad_scaleunit-c_l50-seed0"]  # the clean runs first: the target, the source
    assert len(names) == 22 and c100.source_name() == "none-seed3"


def test_the_cpu_full_report_rebuilds_its_committed_numbers(tmp_path, cifar10_jpeg):
    """``run.py --mode report`` rebuilds the committed report's Table 2 and curve points from its
    training logs (the weights are long gone) and that report itself (--prior_report), with the
    settings of the stage script's first-look-report, which studies/cpu_full.toml holds."""
    full = load(ROOT / "studies" / "cpu_full.toml")
    assert full.matching == {"target": "0.72", "tolerance": 0.01, "stop_at_benign": 0.72, "max_epochs": 0}
    assert full.evaluation == {"attacks": ("fgm", "mim", "deepfool", "cw", "autoattack"), "test_limit": 1000,
                               "autoattack_version": "custom", "autoattack_attacks": ("apgd-ce", "apgd-t"),
                               "autoattack_curve": (2.0,)}
    assert {k: full.report[k] for k in ("curve_test_limit", "figure2_epochs", "autoattack_complete")} == \
        {"curve_test_limit": 500, "figure2_epochs": 3, "autoattack_complete": 100}
    from study.runner import restore_logs
    root = tmp_path / "cifar10-cpu-full"
    root.mkdir()
    restore_logs(full, root, say=lambda *_: None)  # as the study does first, from report.training_logs
    result = run_py("--mode", "report", "--preset", "cpu_full", "--root", str(root), "--match_benign", "0.72",
                    "--test_limit", "1000", "--curve_test_limit", "500", "--attacks", "fgm,mim,deepfool,cw,autoattack",
                    "--autoattack_version", "custom", "--autoattack_attacks", "apgd-ce,apgd-t",
                    "--autoattack_curve", "2", "--autoattack_complete", "100", "--figure2_epochs", "3",
                    "--prior_report", *full.report["prior_reports"])
    assert result.returncode == 0, result.stderr[-2000:]
    rebuilt = json.loads((root / "report" / "report.json").read_text())
    committed = json.loads((RESULTS / "cifar10-cpu-full" / "report.json").read_text())
    assert rebuilt["table"] == committed["table"]
    assert rebuilt["curve_points"] == committed["curve_points"]
    assert rebuilt["fgm_over_epochs"] == committed["fgm_over_epochs"]
