"""Results that say what they were measured on, and evaluation faults that are one line: the
robust-only-if-correct-before-and-after rule, an earlier --eval_dir moved aside, an unwritable
--eval_dir or a corrupt weights file refused before any attack, the report's benign-accuracy
subsets, the black-box and low-accuracy wording of results.md."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import data
from eval import evaluate_results, masking
from study import report_curves
from study import report as report_mode
from eval.config import EvalConfig
from eval.evaluate import evaluate
from eval.metrics import Outcome, summarize
from eval.runs import TrainedRun
from training.config import DefenseConfig, RunConfig, TrainConfig
from training.loop import train
from training.rundir import RunDirError
from tests.test_cli import assert_one_line_error, run_py

pytestmark = pytest.mark.xdist_group("test_eval_reliability")  # one worker: its module fixtures are made once

FAST = dict(mim_iters=5, deepfool_iters=20, cw_iters=10, cw_binary_steps=2, masking_iters=5, batch_size=64)
QUIET = dict(say=lambda *_: None)


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- fast


def test_an_attack_never_scores_above_benign_accuracy():
    """DeepFool moves example 2 (wrong before) onto its true label: it does not count as robust."""
    outcome = Outcome(labels=np.array([0, 1, 2, 0]), clean_pred=np.array([0, 1, 0, 1]),
                      adv_pred=np.array([1, 1, 2, 0]), l2=np.array([0.3, 0.0, 0.2, 0.4], np.float32))
    s = summarize(outcome)
    assert s["benign_accuracy"] == 0.5
    assert s["accuracy"] == 0.25 and s["accuracy"] <= s["benign_accuracy"]


def _results(source_run, benign=0.6, note=None) -> dict:
    white = summarize(Outcome(labels=np.array([0, 1]), clean_pred=np.array([0, 1]), adv_pred=np.array([1, 1]),
                              l2=np.array([0.2, 0.0], np.float32)))
    return {"protocol": {"dataset": "folder:/x", "n": 2, "source_run": source_run, "settings_line": "..."},
            "runs": {"r": {"defense": "none", "benign_accuracy": benign, "seconds_per_epoch": 1.0,
                           "attacks": {"deepfool": {"white": white}}, "masking_note": note,
                           "masking_checks": [{"check": "cw succeeds", "passed": False, "detail": "0.74"}]}}}


def test_results_md_states_the_rule_the_source_and_when_masking_checks_mean_nothing():
    text = evaluate_results.results_markdown(_results(None, benign=0.12, note=masking.low_accuracy_note(0.12, 10)))
    assert "none given" not in text and "No black-box source given" in text
    assert "correctly both before and after the attack" in text
    warning = next(line for line in text.splitlines() if "WARNING" in line)
    assert "0.120 is below 0.200 (2x chance" in warning and "too low" in warning
    assert masking.low_accuracy_note(0.2, 10) is None and masking.low_accuracy_note(0.7, 3) is None
    assert masking.low_accuracy_note(0.8, 2) is None and "below 0.750" in masking.low_accuracy_note(0.7, 2)
    assert "crafted on `runs/src`" in evaluate_results.results_markdown(_results("runs/src"))


def test_figure_titles_say_which_test_images_each_axis_is_on():
    protocol = {"dataset": "folder:/x", "test_images": 50, "curve_test_images": 20,
                "recorded_benign_subsets": {"500 test images (training's --test_limit 500)": ["a", "b"]}}
    title = report_curves._title({"protocol": protocol}, "Figure 5")
    assert "training recorded it on 500 test images (training's --test_limit 500)" in title
    assert "rho_cw on 20 of the report's 50 test images" in title
    mixed = {**protocol, "recorded_benign_subsets": {"x": ["a"], "y": ["b"]}}
    assert "not comparable" in report_curves._title({"protocol": mixed}, "Figure 5")


def _fake_run(tmp_path: Path, name: str, defense: str, test_limit: int, test_size: int) -> report_mode.StudyRun:
    config = {"settings": {"defense.defense": defense, "train.seed": 0, "data.test_limit": test_limit},
              "dataset": {"name": "folder:/x", "test_size": test_size, "num_classes": 10}}
    return report_mode.StudyRun(TrainedRun(tmp_path / name, config), None, {1: 0.4, 2: 0.5}, [1, 2])


def test_matching_refuses_runs_whose_accuracies_were_recorded_on_different_test_subsets(tmp_path, monkeypatch):
    runs = [_fake_run(tmp_path, "none-seed0", "none", 0, 10000), _fake_run(tmp_path, "fgm-seed0", "fgm", 500, 500)]
    monkeypatch.setattr(report_mode, "discover", lambda root: (runs, []))
    with pytest.raises(RunDirError, match="different test subsets") as caught:
        report_mode.build_report(str(tmp_path), EvalConfig(run_dirs=(), **FAST), "lowest", 0.01, **QUIET)
    assert "whole test split (10000 images): none-seed0" in str(caught.value)
    assert "500 test images (training's --test_limit 500): fgm-seed0" in str(caught.value)
    assert "--match_benign none" in str(caught.value)


# ----------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def run_dir(tiny_folder, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    path = root / "none-seed0"
    train(data.DataConfig(dataset=f"folder:{tiny_folder}", data_dir=str(root / "tfds")),
          TrainConfig(epochs=1, batch_size=16, width=0.125, seed=0), DefenseConfig(defense="none"),
          RunConfig(run_dir=str(path), monitor_size=16, checkpoint_every_minutes=0), **QUIET)
    return path


@pytest.mark.slow
def test_an_eval_with_other_settings_moves_the_earlier_one_aside_and_the_same_rewrites_it(run_dir, tmp_path):
    out = tmp_path / "eval"
    cfg = EvalConfig(run_dirs=(str(run_dir),), attacks=("fgm", "deepfool"), eval_dir=str(out), **FAST)
    evaluate(cfg, **QUIET)
    first = (out / "results.md").read_text()
    assert (out / "accuracy_vs_l2_deepfool.png").exists() and "No black-box source given" in first
    assert "masking_note" in json.loads((out / "results.json").read_text())["runs"]["none-seed0"]
    evaluate(cfg, **QUIET)  # the same settings: rewritten in place
    assert not list(tmp_path.glob("eval.replaced-*"))
    said = []
    evaluate(EvalConfig(**{**cfg.__dict__, "attacks": ("fgm",)}), say=said.append)
    kept = list(tmp_path.glob("eval.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "results.md").read_text() == first
    assert (kept[0] / "accuracy_vs_l2_deepfool.png").exists()
    assert not list(out.glob("*.png"))  # no stale plot beside the new results.md
    assert "0 plot(s)" in said[-1] and any(str(kept[0]) in line for line in said)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["read_only_file_system", "a_file", "permissions"])
def test_an_unwritable_eval_dir_is_one_line_before_any_attack(run_dir, tmp_path, where):
    if where == "read_only_file_system":
        target = Path("/sys/no-such-eval-dir")
        if not Path("/sys").is_dir():
            pytest.skip("needs Linux's /sys (read-only, even for root)")
    elif where == "a_file":
        target = tmp_path / "results.txt"
        target.write_text("not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores permission bits")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "eval"
    before = _listing(run_dir)
    result = run_py("--mode", "eval", "--run_dir", str(run_dir), "--attacks", "fgm", "--eval_dir", str(target))
    assert_one_line_error(result, f"--eval_dir {target}", "choose another --eval_dir")
    assert _listing(run_dir) == before  # no attack ran: no eval_cache/ written


@pytest.mark.slow
def test_a_corrupt_weights_file_is_one_line_naming_it(run_dir, tmp_path):
    broken = tmp_path / "broken-run"
    shutil.copytree(run_dir, broken)
    weights = broken / "ema_classifier.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    before = _listing(tmp_path)
    result = run_py("--mode", "eval", "--run_dir", str(broken), "--attacks", "fgm")
    assert_one_line_error(result, str(weights), "truncated or corrupt", "train the run again")
    assert "Unable to synchronously open" not in result.stderr
    assert _listing(tmp_path) == before


@pytest.mark.slow
def test_a_report_over_different_recorded_subsets_warns_in_the_report_and_on_stdout(run_dir, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(run_dir, root / "none-seed0")
    shutil.copytree(run_dir, root / "none-seed1")
    config_path = root / "none-seed1" / "config.json"
    config = json.loads(config_path.read_text())
    config["settings"]["train.seed"] = 1
    config["settings"]["data.test_limit"] = 12
    config["dataset"]["test_size"] = 12
    config_path.write_text(json.dumps(config))
    with pytest.raises(RunDirError, match="different test subsets"):
        report_mode.build_report(str(root), EvalConfig(run_dirs=(), **FAST), "lowest", 0.01, **QUIET)
    said = []
    report_mode.build_report(str(root), EvalConfig(run_dirs=(), attacks=("fgm",), **FAST), "none", 0.01, say=said.append)
    assert any(line.startswith("WARNING") and "different test subsets" in line for line in said)
    text = (root / report_mode.REPORT_DIR / "report.md").read_text()
    assert "**WARNING: the runs' recorded benign accuracies come from different test subsets" in text
    assert "12 test images (training's --test_limit 12): none-seed1" in text
    assert "benign accuracy as training recorded it on different test subsets per run" in text
