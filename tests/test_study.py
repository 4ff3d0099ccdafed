"""Sweeps, benign-accuracy matching and the report (--mode sweep / --mode report) on tiny runs."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import data
from eval import suite
from study import report as report_mode
from eval.config import EvalConfig
from study.matching import closest_epoch, epoch_accuracies, kept_epochs, parse_target
from eval.runs import load_run
from training.config import DefenseConfig, RunConfig, TrainConfig, keeps_epoch
from training import rundir
from study.sweep import Sweep, dry_run, is_finished, progress, run_sweep
from tests.test_cli import assert_one_line_error, run_py

pytestmark = pytest.mark.xdist_group("test_study")  # one worker: its module fixtures are made once

QUIET = dict(say=lambda *_: None)
FAST = dict(mim_iters=5, deepfool_iters=20, cw_iters=10, cw_binary_steps=2, masking_iters=5, batch_size=64)


def _configs(folder, root, epochs=2, **run):
    return (data.DataConfig(dataset=f"folder:{folder}", data_dir=str(Path(root) / "tfds"), augment="none"),
            TrainConfig(epochs=epochs, batch_size=16, width=0.125),
            DefenseConfig(defense="fgm", eps=0.5),
            RunConfig(monitor_size=16, checkpoint_every_minutes=0, keep_checkpoints="all", **run))


def _starts(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == "start"]


def test_matching_picks_the_epoch_closest_to_the_target():
    record = {1: 0.40, 2: 0.52, 3: 0.58, 4: 0.61, 5: 0.60}
    match = closest_epoch(record, [1, 2, 3, 4, 5], 0.575, tolerance=0.01)
    assert (match.epoch, match.difference, match.within_tolerance) == (3, pytest.approx(0.005), True)
    # only kept epochs count, and a target no epoch reaches is reported, not hidden
    match = closest_epoch(record, [1, 2, 5], 0.575, tolerance=0.01)
    assert match.epoch == 5 and match.difference == pytest.approx(0.025) and not match.within_tolerance
    far = closest_epoch(record, [1, 2, 3, 4, 5], 0.9, tolerance=0.01)
    assert far.epoch == 4 and far.difference == pytest.approx(-0.29) and not far.within_tolerance
    assert closest_epoch(record, [1, 2, 3, 4, 5], None, 0.01).epoch == 5  # no matching: the last epoch
    assert closest_epoch({1: 0.5, 2: 0.7}, [1, 2], 0.6, 0.2).epoch == 2  # a tie goes to the longer-trained one
    with pytest.raises(ValueError, match="keep_checkpoints"):
        closest_epoch(record, [], 0.5, 0.01)


def test_match_targets_and_kept_epochs_parse():
    assert parse_target("0.7") == 0.7 and parse_target("clean") == "clean" and parse_target("None") is None
    for bad in ("seventy", "1.5", "0"):
        with pytest.raises(ValueError, match="--match_benign"):
            parse_target(bad)
    assert [e for e in range(1, 8) if keeps_epoch("3", e, 7)] == [3, 6, 7]
    assert [e for e in range(1, 4) if keeps_epoch("last", e, 3)] == [3]
    assert [e for e in range(1, 4) if keeps_epoch("all", e, 3)] == [1, 2, 3]


def test_sweep_specs_are_checked():
    assert Sweep.parse("eps=0.1, 0.3") == Sweep("eps", (0.1, 0.3))
    assert Sweep.parse("pgd_steps=5,10").values == (5, 10)
    assert Sweep.parse("") == Sweep(None, (None,))
    for bad, fragment in (("eps", "NAME=V1"), ("seed=1,2", "cannot vary"), ("pgd_steps=0.5", "int"),
                          ("eps=0.1,0.1", "twice")):
        with pytest.raises(ValueError, match=fragment):
            Sweep.parse(bad)


@pytest.mark.slow
def test_a_sweep_trains_only_what_is_missing(tiny_folder, tmp_path):
    root = tmp_path / "sweep"
    done = run_sweep(str(root), Sweep.parse("eps=0.25"), (0,), *_configs(tiny_folder, tmp_path), **QUIET)
    assert list(done.values()) == ["trained"]
    # the second value stops part-way: one finished run, one half-finished
    cfgs = _configs(tiny_folder, tmp_path, stop_after_steps=3)
    status = run_sweep(str(root), Sweep.parse("eps=0.25,0.5"), (0,), *cfgs, **QUIET)
    finished, half = root / "fgm-eps0.25-seed0", root / "fgm-eps0.5-seed0"
    assert status == {str(finished): "skipped", str(half): "stopped"}
    assert is_finished(finished, 2) and not is_finished(half, 2)
    starts_before = len(_starts(finished))

    # A dry run trains nothing and says where each planned run stands, estimating from a run like it.
    said = []
    planned = dry_run(str(root), Sweep.parse("eps=0.25,0.5,1.0"), (0, 1), *cfgs[:3], say=said.append)
    assert planned == {str(finished): "finished", str(half): "partial", str(root / "fgm-eps1-seed0"): "not started",
                       **{str(root / f"fgm-eps{v}-seed1"): "not started" for v in ("0.25", "0.5", "1")}}
    assert sorted(p.name for p in root.iterdir()) == [finished.name, half.name]
    lines = dict(zip(planned, said))
    assert "checkpoint at step 3" in lines[str(half)] and "(as fgm-eps0.25-seed0)" in lines[str(half)]
    assert "(as fgm-eps0.25-seed0)" in lines[str(root / "fgm-eps0.25-seed1")]  # same point, other seed
    assert said[-1].startswith("dry run: 5 of 6 run(s) to train") and "without an estimate" not in said[-1]
    assert len(_starts(finished)) == starts_before and [s["step"] for s in _starts(half)] == [0]
    # The estimate: the epochs left (from the last logged step) at the finished run's median epoch time.
    epoch = rundir.seconds_per_epoch(finished, 16, _train_size(finished))
    assert progress(half, 2)["epochs_left"] == pytest.approx(2 - 3 / (_train_size(finished) // 16))
    assert f"about {progress(half, 2)['epochs_left'] * epoch / 3600:.2f} h" in lines[str(half)]
    # With --stop_at_benign: to the epoch where the run it is estimated from reached that accuracy.
    said = []
    dry_run(str(root), Sweep.parse("eps=0.25"), (1,), *cfgs[:3], say=said.append,
            stop_at_benign=epoch_accuracies(finished)[1])
    assert f"about {epoch / 3600:.2f} h" in said[0] and "to epoch 1, where fgm-eps0.25-seed0 reached" in said[0]

    status = run_sweep(str(root), Sweep.parse("eps=0.25,0.5"), (0,), *_configs(tiny_folder, tmp_path), **QUIET)
    assert status == {str(finished): "skipped", str(half): "resumed"}
    assert len(_starts(finished)) == starts_before  # the finished run was not even opened
    assert [s["step"] for s in _starts(half)] == [0, 3] and is_finished(half, 2)
    assert json.loads((half / "config.json").read_text())["settings"]["defense.eps"] == 0.5
    assert kept_epochs(half) == [1, 2] and sorted(epoch_accuracies(half)) == [1, 2]


def _train_size(run_dir: Path) -> int:
    return json.loads((run_dir / "config.json").read_text())["dataset"]["train_size"]


def test_a_dry_run_from_the_command_line_trains_nothing(tmp_path):
    root = tmp_path / "empty"
    result = run_py("--mode", "sweep", "--dry_run", "--defense", "fgm", "--sweep", "eps=0.25,0.5", "--seeds", "0",
                    "--root", str(root), "--dataset", "folder:/nonexistent-never-read")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fgm-eps0.25-seed0: not started; no estimate" in result.stdout
    assert "dry run: 2 of 2 run(s) to train, about 0.00 h and 2 without an estimate" in result.stdout
    assert not root.exists()
    assert_one_line_error(run_py("--mode", "train", "--dry_run"), "--dry_run", "--mode sweep")


@pytest.fixture(scope="module")
def study_root(tiny_folder, tmp_path_factory):
    """Two clean runs (seeds 0, 1) and an FGM-AT sweep over eps with two seeds at its middle value."""
    root = tmp_path_factory.mktemp("study")
    cfgs = _configs(tiny_folder, root)
    run_sweep(str(root), Sweep.parse(""), (0, 1), cfgs[0], cfgs[1], DefenseConfig(defense="none"), cfgs[3], **QUIET)
    run_sweep(str(root), Sweep.parse("eps=0.25,0.5,1.0"), (0,), *cfgs, **QUIET)
    run_sweep(str(root), Sweep.parse("eps=0.5"), (1,), *cfgs, **QUIET)
    return root


@pytest.mark.slow
def test_the_report_matches_evaluates_and_draws(study_root, monkeypatch):
    report = report_mode.build_report(str(study_root), EvalConfig(run_dirs=(), **FAST), "lowest", 0.01, **QUIET)
    out = study_root / report_mode.REPORT_DIR
    markdown = (out / "report.md").read_text()
    assert set(report["table"]) == {"none", "fgm"}
    fgm = report["table"]["fgm"]
    assert fgm["value"] == 0.5 and sorted(r["seed"] for r in fgm["rows"]) == [0, 1]  # the point with most seeds
    target = report["protocol"]["target"]
    finals = [epoch_accuracies(study_root / r["run"])[2] for e in report["table"].values() for r in e["rows"]]
    assert target == pytest.approx(min(finals))  # "lowest": the least accurate table run's final accuracy
    for entry in report["table"].values():
        for row in entry["rows"]:
            accuracies = epoch_accuracies(study_root / row["run"])
            best = min(abs(a - target) for a in accuracies.values())
            assert abs(row["match"]["difference"]) == pytest.approx(best)
            assert row["benign_accuracy"] == pytest.approx(row["match"]["recorded_accuracy"])  # same weights, same images
    assert len(report["curve_points"]) == 6 and len(report["fgm_over_epochs"]["points"]) == 2
    for point in report["curve_points"]:  # the curves' benign accuracy is the one training recorded
        assert point["benign_accuracy"] == epoch_accuracies(study_root / point["run"])[2]
        attack = point["training_attack"]  # FGM's L2 step is eps, less where [0, 1] clips it
        assert attack is None if point["defense"] == "none" else 0.5 * point["value"] < attack["delta_l2"] <= point["value"] + 1e-5
    for heading in ("## Protocol", "## Table 2 at matched benign accuracy", "| FGM-AT eps=0.5 | 2 |", "| clean | 2 |",
                    "## The paper's claims", "figure5_robustness_curve.png", "figure2_fgm.png", "| acc under it |"):
        assert heading in markdown
    for plot in report["plots"]:
        assert Path(plot).stat().st_size > 10_000
    assert any(c["claim"].startswith("FGM-AT raises rho_cw") for c in report["claims"])
    cost = report["evaluation_cost"]  # every attack's recorded time, per table group and in all
    assert list(cost["groups"]) == list(report["table"]) and cost["groups"]["fgm"]["runs"] == 2
    assert all(g["cw"] > 0 and g["mim"] > 0 and g["masking-pgd"] > 0 for g in cost["groups"].values())
    assert cost["curve_evaluations"] == 6 + 2 and cost["curve_seconds"] > 0
    assert cost["hours"] == pytest.approx((cost["table_seconds"] + cost["curve_seconds"]) / 3600, abs=1e-3)
    assert cost["unrecorded"] == 0
    assert "## Evaluation cost" in markdown and f"the evaluation {cost['hours']:.2f} h of attack time" in markdown
    # report.json stores its keys sorted (fgm before none); rebuilt from it, the report reads the same.
    from study import report_markdown
    assert report_markdown.markdown(json.loads((out / "report.json").read_text())) == markdown

    def no_crafting(*args, **kwargs):
        raise AssertionError("a second report must reuse the cached attacks")
    monkeypatch.setattr(suite, "craft", no_crafting)
    again = report_mode.build_report(str(study_root), EvalConfig(run_dirs=(), **FAST), "lowest", 0.01, **QUIET)
    assert again["table"]["fgm"]["rows"][0]["attacks"] == fgm["rows"][0]["attacks"]
    assert again["evaluation_cost"] == cost  # cached attacks keep the time of their first computation
    assert not list(study_root.glob(f"{report_mode.REPORT_DIR}.replaced-*"))  # same inputs: rewritten in place


@pytest.mark.slow
def test_the_report_compares_pgn_variants_with_autoattack_and_a_black_box_source(tiny_folder, tmp_path):
    """One root: clean seed 0, the black-box source (clean seed 3), PGN as the paper has it and with
    --pgn_grad_scale unit; the report keeps the source out of the table, groups the variants apart,
    runs AutoAttack on every table run and says how each PGN trained."""
    root = tmp_path / "variants"
    data_cfg, train_cfg, _, run_cfg = _configs(tiny_folder, tmp_path)
    run_sweep(str(root), Sweep.parse(""), (0, 3), data_cfg, train_cfg, DefenseConfig(defense="none"), run_cfg, **QUIET)
    for scale in ("batch_mean", "unit"):
        run_sweep(str(root), Sweep.parse("c_l=1"), (0,), data_cfg, train_cfg,
                  DefenseConfig("pgn", c_l=1.0, gen_width=0.125, pgn_grad_scale=scale), run_cfg, **QUIET)
    assert sorted(p.name for p in root.iterdir()) == [
        "none-seed0", "none-seed3", "pgn-c_l1-seed0", "pgn-pgn_grad_scaleunit-c_l1-seed0"]
    cfg = EvalConfig(run_dirs=(), source_run=str(root / "none-seed3"), attacks=("fgm", "mim", "cw", "autoattack"),
                     autoattack_version="custom", autoattack_attacks=("apgd-ce", "square"), autoattack_iters=5,
                     autoattack_square_queries=10, autoattack_curve=(), **FAST)
    report = report_mode.build_report(str(root), cfg, "lowest", 0.01, **QUIET)
    assert list(report["table"]) == ["none", "pgn", "pgn[pgn_grad_scale=unit]"]  # the source is not a table run
    for entry in report["table"].values():
        (row,) = entry["rows"]
        assert 0 <= row["autoattack"]["robust_accuracy"] <= row["attacks"]["fgm"]["white"]["accuracy"] + 1e-9
        assert "black" in row["attacks"]["fgm"] and "black" in row["attacks"]["mim"]
        assert row["black_box_source"] == "none-seed3"  # what a later report without the source names
        assert row["black_box_source_created"] == json.loads((root / "none-seed3" / "config.json").read_text())["created"]
        assert row["black_box_source_weights"] == load_run(root / "none-seed3").fingerprint()
    over = report["training_attack_over_epochs"]
    assert set(over) == {"pgn", "pgn[pgn_grad_scale=unit]"}  # clean training has no training attack
    assert all(len(v["epochs"]) == 2 and "monitor_zeroed_grad_shift_l2" in v["epochs"][-1] for v in over.values())
    assert set(report["costs"]) == set(report["table"]) and report["costs"]["none"]["runs"] == 1
    markdown = (root / report_mode.REPORT_DIR / "report.md").read_text()
    for text in ("| AutoAttack acc |", "FGM acc (black-box)", "| PGN (pgn_grad_scale=unit) | 1 |",
                 "## The training attack over epochs", "## Training cost", "none-seed3", "training_attack.png",
                 "**PGN (pgn_grad_scale=unit) raises rho_cw over clean training"):
        assert text in markdown, text
    assert "| clean | 1 |" in markdown and "| clean | 2 |" not in markdown


@pytest.mark.slow
def test_a_target_no_run_reaches_is_reported_unmatched(study_root):
    report = report_mode.build_report(str(study_root), EvalConfig(run_dirs=(), **FAST), "0.999", 0.01,
                                curve_test_limit=12, **QUIET)
    assert report["protocol"]["curve_test_images"] == 12
    assert all(p["cw"]["n"] == 12 for p in report["curve_points"])
    assert not any(r["match"]["within_tolerance"] for e in report["table"].values() for r in e["rows"])
    unmatched = (study_root / report_mode.REPORT_DIR / "report.md").read_text()
    assert "**unmatched**" in unmatched

    report_mode.build_report(str(study_root), EvalConfig(run_dirs=(), **FAST), "lowest", 0.01, curve_test_limit=12,
                             dataset_label="Tiny (test copy)", **QUIET)
    kept = [p / "report.md" for p in study_root.glob(f"{report_mode.REPORT_DIR}.replaced-*")]
    assert unmatched in [p.read_text() for p in kept]  # another target: the old report is moved aside
    labelled = (study_root / report_mode.REPORT_DIR / "report.md").read_text()
    assert labelled.startswith("# Reproduction report: Tiny (test copy)\n") and "- Data: Tiny (test copy): folder:" in labelled
    assert unmatched.startswith("# Reproduction report: folder:")  # no label: the --dataset value, as before


@pytest.mark.slow
def test_sweep_and_report_command_line_errors(tmp_path):
    assert_one_line_error(run_py("--mode", "sweep", "--sweep", "seed=1,2", "--root", str(tmp_path)), "cannot vary")
    assert_one_line_error(run_py("--mode", "sweep", "--sweep", "eps=0.1"), "--root")
    assert_one_line_error(run_py("--mode", "report", "--root", str(tmp_path / "nowhere")), "not a directory")
    assert_one_line_error(run_py("--mode", "report", "--root", str(tmp_path), "--match_benign", "most"),
                          "--match_benign")
    assert_one_line_error(run_py("--mode", "report", "--root", str(tmp_path), "--autoattack_complete", "100"),
                          "add autoattack to --attacks")
    assert_one_line_error(run_py("--mode", "report", "--root", str(tmp_path), "--attacks", "fgm,autoattack",
                                 "--autoattack_complete", "100"), "already runs every attack")


def test_the_plots_draw_defenses_run_at_a_single_setting(tmp_path):
    """A defense trained at one value (no sweep) has no swept value to label its points with."""
    from study import report_curves as curves

    def point(defense, value, seed, benign, rho):
        return {"defense": defense, "value": value, "seed": seed, "run": f"{defense}-seed{seed}",
                "benign_accuracy": benign, "cw": {"mean_l2_all": rho, "mean_l2_correct": 2 * rho}}
    report = {"protocol": {"dataset": "folder:x", "test_images": 10},
              "curve_points": [point("fgm", None, 0, 0.5, 0.7), point("fgm", None, 1, 0.52, 0.66),
                               point("pgn", 0.1, 0, 0.51, 0.5), point("pgn", 1.0, 0, 0.55, 0.4)],
              "fgm_over_epochs": {"run": "fgm-seed0", "points": [
                  {"epoch": 1, "benign_accuracy": 0.4, "cw": {"mean_l2_all": 0.6}},
                  {"epoch": 2, "benign_accuracy": 0.5, "cw": {"mean_l2_all": 0.7}}]}}
    paths = curves.draw(report, tmp_path)
    assert [Path(p).name for p in paths] == ["figure5_robustness_curve.png", "figure2_fgm.png"]
    assert all(Path(p).stat().st_size > 10_000 for p in paths)


def test_a_one_seed_comparison_goes_by_sign_and_says_so():
    from study import report_markdown as markdown, verdicts as claims
    diff, margin = claims.compare((0.5, 0.0), (0.7, 0.0), 1, 3)
    assert diff == pytest.approx(-0.2) and claims.verdict(diff, margin) == "contradicted (one seed)"
    assert claims.verdict(*claims.compare((0.5, 0.01), (0.7, 0.02), 3, 3)) == "contradicted"
    assert claims.verdict(*claims.compare((0.70, 0.1), (0.69, 0.1), 3, 3)) == "inconclusive"  # 2 SE is 0.16


def _study_run(name, **settings):
    """A StudyRun over a stand-in run: group() reads only its name, defense and settings."""
    from types import SimpleNamespace
    from training.rundir import default_settings
    defense = settings.pop("defense", "pgn")
    recorded = {**default_settings(defense), "defense.defense": defense,
                **{k.replace("__", "."): v for k, v in settings.items()}}
    return report_mode.StudyRun(SimpleNamespace(name=name, defense=defense, settings=recorded), None, {}, [])


def test_the_report_groups_a_defenses_variants_apart_and_sweeps_within_each():
    runs = [_study_run(f"pgn-c_l0.3-seed{s}", defense__c_l=0.3, train__seed=s) for s in (0, 1)]
    runs += [_study_run("pgn-c_l0.1-seed0", defense__c_l=0.1)]
    runs += [_study_run(f"pgn-pgn_grad_scaleunit-c_l{c}-seed0", defense__c_l=c, defense__pgn_grad_scale="unit")
             for c in (0.1, 0.3, 1.0)]
    runs += [_study_run("fgm-seed0", defense="fgm")]
    groups = report_mode.group(runs)
    assert list(groups) == ["fgm", "pgn", "pgn[pgn_grad_scale=unit]"]
    assert [m.run.name for m in groups["pgn[pgn_grad_scale=unit]"]] == [
        "pgn-pgn_grad_scaleunit-c_l0.1-seed0", "pgn-pgn_grad_scaleunit-c_l0.3-seed0", "pgn-pgn_grad_scaleunit-c_l1.0-seed0"]
    assert {m.swept for m in groups["pgn"] + groups["pgn[pgn_grad_scale=unit]"]} == {"defense.c_l"}
    assert groups["fgm"][0].swept is None and groups["fgm"][0].label == "FGM-AT"
    assert groups["pgn[pgn_grad_scale=unit]"][0].label == "PGN (pgn_grad_scale=unit) c_l=0.1"
    assert [m.value for m in report_mode.table_point(groups["pgn"])] == [0.3, 0.3]  # the value with most seeds
    # two numbers varied within one variant is two sweeps: refused, naming both
    with pytest.raises(report_mode.RunDirError, match="defense.c_l, defense.gen_width"):
        report_mode.group(runs + [_study_run("pgn-gen_width2-seed0", defense__c_l=2.0, defense__gen_width=2.0)])


def test_a_sweep_names_a_variant_beside_its_value():
    from study.sweep import plan
    cfg = DefenseConfig("pgn", pgn_grad_scale="unit", c_l=0.3)
    assert cfg.variant() == {"pgn_grad_scale": "unit"} and DefenseConfig("pgn").variant() == {}
    names = [p.run_dir.name for p in plan(Path("r"), "pgn", Sweep.parse("c_l=0.3,1"), (0,), cfg.variant())]
    assert names == ["pgn-pgn_grad_scaleunit-c_l0.3-seed0", "pgn-pgn_grad_scaleunit-c_l1-seed0"]
    # the defaults' names are what they were, and a swept categorical setting is named once
    assert [p.run_dir.name for p in plan(Path("r"), "pgn", Sweep.parse("c_l=1"), (2,), {})] == ["pgn-c_l1-seed2"]
    swept = plan(Path("r"), "pgn", Sweep.parse("pgn_grad_scale=unit"), (0,), cfg.variant())
    assert [p.run_dir.name for p in swept] == ["pgn-pgn_grad_scaleunit-seed0"]


def test_each_pgn_variant_is_judged_on_the_papers_claims_and_by_autoattack():
    from study import report_markdown as markdown, verdicts as claims

    def row(seed, cw, aa, fgm=0.4):
        return {"seed": seed, "benign_accuracy": 0.7, "seconds_per_epoch": 10.0, "masking_checks": [],
                "match": {"epoch": 5, "difference": 0.0, "within_tolerance": True},
                "attacks": {"fgm": {"white": {"accuracy": fgm}}, "mim": {"white": {"accuracy": fgm}},
                            "cw": {"white": {"mean_l2_all": cw}}},
                "autoattack": {"robust_accuracy": aa, "worst_case": {"accuracy": aa}}}
    table = {"fgm": {"label": "FGM-AT", "rows": [row(s, 0.60 + 0.01 * s, 0.40 + 0.01 * s) for s in range(3)]},
             "pgn": {"label": "PGN", "rows": [row(s, 0.40 + 0.01 * s, 0.30 + 0.01 * s) for s in range(3)]},
             "pgn[pgn_grad_scale=unit]": {"label": "PGN (pgn_grad_scale=unit)",
                                          "rows": [row(s, 0.61 + 0.01 * s, 0.45 + 0.01 * s) for s in range(3)]}}
    verdicts = {c["claim"]: c["verdict"] for c in claims.assess({"table": table, "curve_points": []})}
    assert verdicts["PGN keeps more accuracy under AutoAttack than FGM-AT and PGD-AT."] == "contradicted"
    assert verdicts["PGN (pgn_grad_scale=unit) keeps more accuracy under AutoAttack than FGM-AT and PGD-AT."] == \
        "supported"  # 0.05 over FGM-AT's, 2 SE 0.016
    assert verdicts["PGN (pgn_grad_scale=unit)'s classifier needs larger CW-L2 perturbations (rho_cw) than FGM-AT's "
                    "and PGD-AT's at the same benign accuracy (Table 3)."] == "inconclusive"


def test_a_report_on_a_100_class_dataset_is_set_beside_the_papers_cifar100_table():
    """The paper's main text measures on CIFAR-100 (Table 2, eps 0.02), its appendix on CIFAR-10
    (Table 3, eps 0.1): a report's claims and its paper table are the dataset's, black-box included."""
    from study import verdicts as claims
    from study.published import paper_for

    def row(seed, fgm, black, cw):
        attack = {"white": {"accuracy": fgm}, "black": {"accuracy": black}}
        return {"seed": seed, "benign_accuracy": 0.23, "seconds_per_epoch": 10.0, "masking_checks": [],
                "match": {"epoch": 5, "difference": 0.0, "within_tolerance": True},
                "attacks": {"fgm": attack, "mim": attack, "cw": {"white": {"mean_l2_all": cw, "median_l2_all": cw}}}}
    table = {d: {"label": d, "rows": [row(s, fgm + 0.01 * s, black + 0.01 * s, cw) for s in range(3)]}
             for d, fgm, black, cw in (("none", 0.10, 0.15, 0.10), ("fgm", 0.20, 0.18, 0.20),
                                       ("pgd", 0.21, 0.19, 0.20), ("pgn", 0.15, 0.20, 0.12))}
    assert paper_for(100) == "cifar100" and paper_for(10) == "cifar10" and paper_for(None) == "cifar10"
    report = {"table": table, "curve_points": [], "protocol": {"paper_table": paper_for(100)}}
    found = {c["claim"]: c for c in claims.assess(report)}
    cw = found["PGN's classifier needs larger CW-L2 perturbations (rho_cw) than FGM-AT's and PGD-AT's at the same "
               "benign accuracy (Table 2)."]
    assert cw["paper"] == "CIFAR-100 CW mean L2: PGN 0.262, FGM-AT 0.133, PGD-AT 0.131." and cw["verdict"] == "contradicted"
    black = found["PGN keeps more accuracy under black-box FGM (crafted on an independently trained clean network) "
                  "than FGM-AT and PGD-AT (Table 2)."]
    assert black["paper"] == "CIFAR-100 black-box FGM accuracy: PGN 0.643, FGM-AT 0.521, PGD-AT 0.516."
    assert black["verdict"] == "mixed"  # 0.02 over FGM-AT's (2 SE 0.016), 0.01 over PGD-AT's: inconclusive
    assert found["PGN's median CW-L2 perturbation is larger than FGM-AT's and PGD-AT's (Table 2)."]["verdict"] == \
        "contradicted"
    for entry in table.values():  # at low benign accuracy the median over all images is ~0: no verdict from it
        for r in entry["rows"]:  # (CIFAR-100 at benign 0.23: 1.49e-5 to 1.50e-5, one run's above another's)
            r["attacks"]["cw"]["white"]["median_l2_all"] = 1.49e-5 + (1e-7 if entry["label"] == "pgn" else 0.0)
    median = next(c for c in claims.assess(report) if c["claim"].startswith("PGN's median CW-L2"))
    assert median["verdict"] == "cannot be assessed" and "over half the images are misclassified" in median["ours"]
    assert "FGM-AT and PGD-AT end up about equally robust" in " ".join(found)
    assert all("CIFAR-10 " not in c["paper"] for c in found.values())
    # a report made before the protocol named its table is compared with CIFAR-10's, as it was
    assert "CIFAR-10 CW mean L2: PGN 0.437, FGM-AT 0.420" in claims.assess({"table": table, "curve_points": []})[0]["paper"]


def test_table2_says_over_how_many_seeds_a_column_is_and_shows_one_value_without_a_spread():
    from study import report_markdown as markdown, verdicts as claims
    from study.report_tables import aggregate_table

    def row(seed, fgm, black=None):
        attack = {"white": {"accuracy": fgm}, **({"black": {"accuracy": black}} if black is not None else {})}
        return {"seed": seed, "benign_accuracy": 0.7, "match": {"epoch": 5, "difference": 0.0, "within_tolerance": True},
                "masking_checks": [], "attacks": {"fgm": attack, "mim": attack, "cw": {"white": {"mean_l2_all": 0.5}}}}
    # seed 0 was evaluated without the black-box source, seed 1 with it; PGD-AT has one seed
    table = {"fgm": {"label": "FGM-AT", "rows": [row(0, 0.40), row(1, 0.44, black=0.69)]},
             "pgd": {"label": "PGD-AT", "rows": [row(0, 0.42, black=0.70)]}}
    agg = aggregate_table(table)
    assert agg["fgm"]["counts"]["fgm_black"] == 1 and agg["fgm"]["counts"]["fgm_acc"] == 2
    from study.report_tables import TABLE_COLUMNS
    lines = {l.split(" | ")[0]: l for l in markdown.table2_lines(agg, TABLE_COLUMNS)}
    assert "| 0.420 ± 0.028 |" in lines["| FGM-AT"] and "| 0.690 (1 of 2) |" in lines["| FGM-AT"]
    assert "±" not in lines["| PGD-AT"] and "| 0.420 |" in lines["| PGD-AT"]
    # a claim over a column takes its standard error from the seeds that have it
    diff, margin = claims.compare(agg["fgm"]["fgm_black"], agg["pgd"]["fgm_black"], 1, 1)
    assert claims.verdict(diff, margin) == "contradicted (one seed)"


def test_a_report_without_a_source_still_says_which_run_its_earlier_black_box_columns_came_from():
    """A session on a new machine reports without --source_run; rows an earlier report evaluated
    with one keep their black-box numbers, and the protocol still names the run they were crafted on."""
    from study import report_markdown as markdown, verdicts as claims
    from study import report_prior

    def row(run, black):
        attack = {"white": {"accuracy": 0.5}, **({"black": {"accuracy": 0.7}} if black else {})}
        return {"run": run, "attacks": {"fgm": attack, "mim": attack}}
    earlier = {"protocol": {"source_run": "/old/machine/none-seed3"},
               "table": {"fgm": {"rows": [row("fgm-seed0", False), row("fgm-seed1", True)]}}}
    # a report.json made before rows named their source: the protocol's --source_run stands in
    assert report_prior.black_box_source(earlier["table"]["fgm"]["rows"][1], earlier["protocol"]) == "none-seed3"
    assert report_prior.black_box_source(earlier["table"]["fgm"]["rows"][0], earlier["protocol"]) is None
    kept = {**row("fgm-seed1", True), "black_box_source": "none-seed3"}  # what table_row hands on
    now = {"protocol": {"source_run": None},
           "table": {"fgm": {"rows": [row("fgm-seed0", False), kept, row("fgm-seed2", False)]}}}
    lines = markdown.black_box_lines(now)
    assert "independent run `none-seed3`" in lines[0] and "this one had no --source_run" in lines[0]
    assert lines[1].endswith("`fgm-seed0`, `fgm-seed2` were evaluated without the source.")
    with_source = {**now, "protocol": {"source_run": "/new/none-seed4"}}
    with_source["table"] = {"fgm": {"rows": [kept, {**row("fgm-seed2", True), "black_box_source": "none-seed4"}]}}
    assert markdown.black_box_lines(with_source) == [
        "- Black-box: every attack also crafted on the independent runs `none-seed3`, `none-seed4` and transferred."]
    assert markdown.black_box_lines({**now, "table": {"fgm": {"rows": [row("fgm-seed0", False)]}}}) == []
    # the source trained again under its name on a new machine: the rows say which training each came from
    again = {**row("fgm-seed2", True), "black_box_source": "none-seed3", "black_box_source_weights": "ab12",
             "black_box_source_created": "2026-12-02T07:00"}
    mixed = {**now, "table": {"fgm": {"rows": [again, kept]}}}
    assert report_prior.source_trainings(mixed["table"]["fgm"]["rows"], now["protocol"]) == {
        "none-seed3": {"ab12": {"created": "2026-12-02T07:00", "runs": ["fgm-seed2"]},
                       None: {"created": None, "runs": ["fgm-seed1"]}}}
    assert markdown.black_box_lines(mixed)[1] == (
        "- `none-seed3` was trained again under its name (a new machine had lost its weights); the rows record which "
        "training their black-box columns came from: `fgm-seed1`: an earlier training (its weights not recorded); "
        "`fgm-seed2`: weights ab12 (training created 2026-12-02T07:00).")
    other = {**again, "run": "fgm-seed3", "black_box_source_weights": "cd34"}
    assert set(report_prior.source_trainings([again, other], now["protocol"])["none-seed3"]) == {"ab12", "cd34"}
    # trained again to the same weights (training is deterministic on one machine): one source, nothing to say
    same = {**again, "run": "fgm-seed3", "black_box_source_created": "2026-12-03T07:00"}
    assert report_prior.source_trainings([again, same], now["protocol"]) == {}


def test_figure2_takes_evenly_spaced_kept_epochs_with_the_last():
    assert report_mode.spaced(list(range(1, 21)), 6) == [1, 5, 9, 12, 16, 20]
    assert report_mode.spaced([1, 2, 3], 6) == [1, 2, 3] and report_mode.spaced(list(range(1, 21)), 1) == [20]
    assert report_mode.spaced(list(range(1, 21)), 2) == [1, 20]


def test_the_report_completes_autoattack_to_the_standard_version_on_a_subset(tmp_path):
    """--autoattack_complete N: APGD-CE on every test image of each table run, the standard
    version's other attacks on N of them; refused before any attack runs when the first attacks
    are not the standard's."""
    import dataclasses

    from tests.test_eval_autoattack import four_class_folder  # APGD-T needs four classes

    folder = four_class_folder(tmp_path / "images")
    root = tmp_path / "root"
    data_cfg, train_cfg, _, run_cfg = _configs(folder, tmp_path)
    run_sweep(str(root), Sweep.parse(""), (0,), data_cfg, train_cfg, DefenseConfig(defense="none"), run_cfg, **QUIET)
    cfg = EvalConfig(run_dirs=(), attacks=("fgm", "autoattack"), autoattack_version="custom",
                     autoattack_attacks=("apgd-ce",), autoattack_iters=3, autoattack_square_queries=10,
                     autoattack_curve=(), **FAST)
    with pytest.raises(ValueError, match="standard's first attacks"):
        report_mode.build_report(str(root), dataclasses.replace(cfg, autoattack_attacks=("square",)), "none", 0.01,
                                 autoattack_complete=6, say=lambda *_: pytest.fail("an attack ran"))
    with pytest.raises(ValueError, match="add autoattack"):
        report_mode.build_report(str(root), dataclasses.replace(cfg, attacks=("fgm",)), "none", 0.01,
                                 autoattack_complete=6, **QUIET)
    report = report_mode.build_report(str(root), cfg, "none", 0.01, autoattack_complete=6, **QUIET)
    (row,) = report["table"]["none"]["rows"]
    standard = row["autoattack"]["standard"]
    assert standard["n"] == 6 and list(standard["found"]) == ["apgd-t", "fab-t", "square"]
    assert standard["flags"]["apgd-ce"] == [row["per_example"]["autoattack"][i] for i in standard["examples"]]
    assert standard["accuracy"] <= standard["first_attacks_accuracy"] + 1e-9
    assert report["protocol"]["autoattack_complete"] == 6
    markdown = (root / report_mode.REPORT_DIR / "report.md").read_text()
    for text in ("standard AutoAttack acc (subset)", "## Standard AutoAttack on a subset", "broken by square",
                 "on a fixed random subset of 6 of the"):
        assert text in markdown, text


def test_the_paired_comparison_counts_discordant_images_seed_by_seed():
    from study import report_markdown as markdown, verdicts as claims
    from study.report_tables import paired, sign_test

    assert sign_test(5, 0) == sign_test(0, 5) == 2 / 32 and sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert abs(sign_test(15, 32) - 0.018624) < 1e-6

    def row(seed, flags):
        return {"seed": seed, "per_example": {"autoattack": flags}}
    table = {"fgm": {"rows": [row(0, [1, 1, 0, 0, 1]), row(1, [0, 0, 0, 0, 0])]},
             "pgn": {"rows": [row(0, [1, 0, 1, 0, 0]), row(2, [1, 1, 1, 1, 1])]}}  # seed 2 has no FGM-AT run
    (seed0,) = paired(table, "pgn", "fgm", "autoattack")
    assert (seed0["seed"], seed0["images"], seed0["only_a"], seed0["only_b"]) == (0, 5, 1, 2)
    assert seed0["p"] == 1.0 and paired(table, "pgn", "fgm", "mim") == []
    lines = "\n".join(markdown._paired_markdown({"table": table}))
    assert "## Paired per-image comparison" in lines and "| PGN | FGM-AT | 0 | 5 | 1 | 2 | 1 |" in lines


def test_the_evaluation_cost_counts_each_attack_once_as_recorded():
    from study.report_tables import evaluation_cost

    def row(black_seconds, standard=None):
        return {"attacks": {"fgm": {"white": {"seconds": 2.0}, "black": {"seconds": black_seconds}},
                            "cw": {"white": {"seconds": None}}},  # cached before times were kept: counts 0
                "masking_pgd": {"seconds": 3.0},
                "autoattack": {"seconds": {"clean": 100.0, "apgd-ce": 10.0, "apgd-t": 30.0},
                               "curve": [{"seconds": 0.0}, {"seconds": 5.0}],
                               **({"standard": {"seconds": standard}} if standard else {})}}

    # Two targets that shared the source's FGM adversarials (one recorded time) and one crafted apart.
    report = {"table": {"none": {"rows": [row(7.0), row(7.0)]}, "fgm": {"rows": [row(9.0, {"fab-t": 20.0, "square": 40.0})]}},
              "curve_points": [{"cw": {"seconds": 4.0}}], "fgm_over_epochs": {"points": [{"cw": {"seconds": 6.0}}]}}
    cost = evaluation_cost(report)
    assert cost["groups"]["none"] == {"runs": 2, "fgm": 2.0, "cw": 0.0, "masking-pgd": 3.0, "autoattack": 40.0,
                                      "autoattack-curve": 5.0, "autoattack-standard": 0.0}
    assert cost["groups"]["fgm"]["autoattack-standard"] == 60.0
    assert cost["table_seconds"] == 2 * 50.0 + 110.0 and cost["black_box_seconds"] == 7.0 + 9.0
    assert cost["curve_seconds"] == 10.0 and cost["curve_evaluations"] == 2
    assert cost["hours"] == pytest.approx((210.0 + 16.0 + 10.0) / 3600, abs=1e-3)
    assert cost["unrecorded"] == 3  # each row's CW


@pytest.mark.slow
def test_a_report_grows_from_an_earlier_one_whose_runs_lost_their_weights(tiny_folder, tmp_path):
    """A study outliving its machine: report A evaluates seed 0; its runs' weights are lost and only
    their training logs kept; seed 1 trains elsewhere, finished early at the matched accuracy; report
    B takes seed 0's numbers from A (after matching the logs to A's epochs) and evaluates seed 1."""
    import shutil

    data_cfg, train_cfg, fgm, run_cfg = _configs(tiny_folder, tmp_path)
    clean = DefenseConfig(defense="none")
    first, second = tmp_path / "session1", tmp_path / "session2"
    for defense, sweep in ((clean, ""), (fgm, "eps=0.5")):  # flags: as run.py records them
        run_sweep(str(first), Sweep.parse(sweep), (0,), data_cfg, train_cfg, defense, run_cfg,
                  flags={"keep_checkpoints": "all"}, **QUIET)
    cfg = EvalConfig(run_dirs=(), attacks=("fgm", "mim", "cw"), **FAST)
    a = report_mode.build_report(str(first), cfg, "0.5", 1.0, figure2_epochs=2, **QUIET)
    prior = first / report_mode.REPORT_DIR / "report.json"
    for run in first.iterdir():  # what a commit keeps of a run: its config and log
        if (run / rundir.CONFIG_FILE).exists():
            (second / run.name).mkdir(parents=True)
            for name in (rundir.CONFIG_FILE, rundir.METRICS_FILE):
                shutil.copyfile(run / name, second / run.name / name)
    early = dataclasses.replace(run_cfg, stop_at_benign=1e-6)  # every run stops after its first epoch
    for defense, sweep in ((clean, ""), (fgm, "eps=0.5")):
        status = run_sweep(str(second), Sweep.parse(sweep), (1,), data_cfg, train_cfg, defense, early, **QUIET)
        assert list(status.values()) == ["trained"]

    with pytest.raises(rundir.RunDirError, match="no weights"):
        report_mode.build_report(str(second), cfg, "0.5", 1.0, figure2_epochs=2, **QUIET)
    with pytest.raises(rundir.RunDirError, match="finished early"):
        report_mode.build_report(str(second), cfg, "lowest", 1.0, prior_reports=[prior], **QUIET)
    with pytest.raises(rundir.RunDirError, match="another attack_settings"):
        report_mode.build_report(str(second), dataclasses.replace(cfg, cw_iters=11), "0.5", 1.0,
                                 figure2_epochs=2, prior_reports=[prior], **QUIET)
    b = report_mode.build_report(str(second), cfg, "0.5", 1.0, figure2_epochs=2, prior_reports=[prior], **QUIET)
    for defense in ("none", "fgm"):
        rows = {r["seed"]: r for r in b["table"][defense]["rows"]}
        (old,) = a["table"][defense]["rows"]
        assert sorted(rows) == [0, 1] and rows[1]["match"]["epoch"] == 1  # seed 1 stopped after epoch 1
        assert rows[0]["attacks"] == old["attacks"] and rows[0]["match"] == old["match"]
        assert rows[0]["evaluated_by"] == str(prior) and "evaluated_by" not in rows[1]
        assert rows[1]["attacks"]["cw"]["white"]["n"] == old["attacks"]["cw"]["white"]["n"]
    assert sorted(p["run"] for p in b["curve_points"]) == sorted(p["run"] for p in a["curve_points"])  # seed 0 only
    assert [p["cw"] for p in b["curve_points"]] == [p["cw"] for p in a["curve_points"]]
    assert b["fgm_over_epochs"] == a["fgm_over_epochs"]
    assert b["protocol"]["prior_reports"] == [{"path": str(prior), "commit": a["protocol"]["report_git"]["commit"][:10],
                                               "runs": ["fgm-eps0.5-seed0", "none-seed0"]}]
    assert b["protocol"]["finished_early"] == ["fgm-eps0.5-seed1", "none-seed1"]
    assert "finished_early_max_epochs" not in b["protocol"]  # as long as the others: nothing to say
    markdown = (second / report_mode.REPORT_DIR / "report.md").read_text()
    assert "From an earlier report: `fgm-eps0.5-seed0`, `none-seed0` evaluated by" in markdown
    assert "Finished early (`--stop_at_benign`): `fgm-eps0.5-seed1`, `none-seed1`" in markdown
    assert "| clean | 2 |" in markdown


def test_figure5s_claim_compares_the_curves_where_their_benign_accuracies_overlap():
    from study import report_markdown as markdown, verdicts as claims

    def point(group, value, benign, rho):
        return {"defense": group.split("[")[0], "group": group, "value": value, "benign_accuracy": benign,
                "cw": {"mean_l2_all": rho}, "training_attack": None}
    fgm = [point("fgm", e, b, r) for e, b, r in ((0.25, 0.80, 0.50), (0.5, 0.75, 0.80), (1.0, 0.65, 1.10))]
    # PGN below FGM-AT on 0.70-0.76 (interpolated at 11 benign accuracies), a one-point variant
    pgn = [point("pgn", c, b, r) for c, b, r in ((0.1, 0.76, 0.60), (0.3, 0.70, 0.80))]
    unit = [point("pgn[pgn_grad_scale=unit]", 1, 0.75, 0.90)]
    report = {"curve_points": fgm + pgn + unit}
    claim = claims._curve_claim(report, "pgn")
    assert claim["verdict"] == "contradicted"
    assert "over benign accuracy 0.700-0.760" in claim["ours"] and "at 0% of 11 points" in claim["ours"]
    claim = claims._curve_claim(report, "pgn[pgn_grad_scale=unit]")
    assert claim["verdict"] == "cannot be assessed"
    # a single point inside the other curve's range is compared there, without a verdict
    assert "PGN (pgn_grad_scale=unit) has one curve point (at its benign accuracy 0.750: " \
           "PGN (pgn_grad_scale=unit) 0.900, FGM-AT 0.800)" in claim["ours"]
    # PGN above FGM-AT where they overlap: supported
    above = [point("pgn", c, b, r) for c, b, r in ((0.1, 0.76, 1.0), (0.3, 0.70, 1.2))]
    assert claims._curve_claim({"curve_points": fgm + above}, "pgn")["verdict"] == "supported"
    # curves that overlap nowhere are said to, not judged
    apart = [point("pgn", c, b, r) for c, b, r in ((0.1, 0.60, 0.9), (0.3, 0.55, 1.0))]
    claim = claims._curve_claim({"curve_points": fgm[:2] + apart}, "pgn")
    assert claim["verdict"] == "cannot be assessed" and "share no benign-accuracy range" in claim["ours"]
    # the claim is "above FGM-AT's and PGD-AT's": below one of them contradicts it, whatever the other
    # shows; above one with the other not comparable yet leaves it unassessed, not supported
    pgd = [point("pgd", 0.5, 0.74, 0.75)]
    claim = claims._curve_claim({"curve_points": fgm + pgn + pgd}, "pgn")
    assert claim["verdict"] == "contradicted"
    assert "PGD-AT has one curve point (at its benign accuracy 0.740: PGN 0.667, PGD-AT 0.750)" in claim["ours"]
    outside = [point("pgd", 0.5, 0.78, 0.75)]  # beyond PGN's 0.70-0.76: nothing to compare it with
    assert claims._curve_claim({"curve_points": fgm + pgn + outside}, "pgn")["ours"].endswith(
        "; PGD-AT has one curve point")
    assert claims._curve_claim({"curve_points": fgm + above + pgd}, "pgn")["verdict"] == "cannot be assessed"
    crossing = [point("pgn", c, b, r) for c, b, r in ((0.1, 0.76, 0.95), (0.3, 0.70, 0.80))]
    pgd_low = [point("pgd", e, b, 0.30) for e, b in ((0.25, 0.78), (1.0, 0.66))]
    assert claims._curve_claim({"curve_points": fgm + crossing + pgd_low}, "pgn")["verdict"] == "mixed"
    assert claims._curve_claim({"curve_points": fgm + above + pgd_low}, "pgn")["verdict"] == "supported"
