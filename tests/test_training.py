"""The training loop on a tiny image folder: steps, resume, run directory rules, failures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import data
from training import rundir
from training.config import DefenseConfig, RunConfig, TrainConfig
from training.defenses import NAMES as DEFENSE_NAMES, defense_class
from training.loop import EMA_WEIGHTS_FILE, TrainingError, train


def _configs(folder, run_dir, defense="none", data_dir=None, **overrides):
    data_cfg = data.DataConfig(dataset=f"folder:{folder}", data_dir=str(data_dir or Path(run_dir).parent / "tfds"),
                               augment=overrides.pop("augment", "flip_shift"))
    train_cfg = TrainConfig(**{"epochs": 2, "batch_size": 16, "width": 0.125, "seed": 3,
                               **{k: overrides.pop(k) for k in list(overrides) if k in TrainConfig.__dataclass_fields__}})
    # Settings of other defenses are left out, so one call can name each defense's (pgd_steps, rvs_norm).
    every_defense = {n for d in DEFENSE_NAMES for n in DefenseConfig.setting_names(d)}
    defense_settings = {k: overrides.pop(k) for k in list(overrides) if k in every_defense}
    defense_cfg = DefenseConfig(defense, **{k: v for k, v in defense_settings.items()
                                            if k in DefenseConfig.setting_names(defense)})
    run_cfg = RunConfig(**{"run_dir": str(run_dir), "monitor_size": 16, "log_every_steps": 2,
                           "checkpoint_every_minutes": 0, **overrides})
    return data_cfg, train_cfg, defense_cfg, run_cfg


def _train(folder, run_dir, **kwargs):
    return train(*_configs(folder, run_dir, **kwargs), say=lambda *_: None)


def _records(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_each_registered_defense_names_a_class_that_trains_it():
    for name in DEFENSE_NAMES:
        assert defense_class(name).name == name


@pytest.mark.parametrize("defense", DEFENSE_NAMES)
@pytest.mark.slow
def test_each_defense_trains_with_one_trace_and_a_complete_run_directory(tiny_folder, tmp_path, defense):
    result = _train(tiny_folder, tmp_path / "run", defense=defense, pgd_steps=3, eps=0.5, rvs_norm="2",
                    gen_width=0.25)
    assert result.finished and result.step == 2 * (96 // 16)
    assert result.train_step_traces == 1
    run = tmp_path / "run"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith(f"-{result.step}")
    assert (run / EMA_WEIGHTS_FILE).exists()
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["defense.defense"] == defense
    assert config["dataset"]["train_size"] == 96 and config["dataset"]["num_classes"] == 3
    assert config["versions"]["tensorflow"] and "commit" in config["git"]
    epochs = _records(run, "epoch_record")
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert 0.0 <= epochs[-1]["test_acc"] <= 1.0
    if defense != "none":
        assert epochs[-1]["monitor_delta_l2_mean"] > 0.0 and epochs[-1]["train_delta_l2_mean"] > 0.0
    if defense not in ("none", "pgn"):  # PGN has no ball: c_L's penalty bounds its perturbations
        assert epochs[-1]["monitor_delta_l2_mean"] <= 0.5 + 1e-4
    if defense == "pgn":  # the zeroed-gradient-input test, each epoch
        assert epochs[-1]["monitor_zeroed_grad_shift_l2"] > 0.0 and epochs[-1]["monitor_grad_input_rms"] > 0.0


@pytest.mark.slow
def test_loss_falls_and_the_average_learns_the_tiny_task(tiny_folder, tmp_path):
    result = _train(tiny_folder, tmp_path / "run", epochs=6, lr=2e-3)
    train_losses = [r["loss"] for r in _records(tmp_path / "run", "train")]
    assert np.mean(train_losses[-3:]) < 0.7 * np.mean(train_losses[:3])
    assert result.epoch_records[-1]["test_acc"] >= 0.9  # three colour classes


@pytest.mark.slow
def test_same_seed_gives_identical_losses(tiny_folder, tmp_path):
    for name in ("a", "b"):
        _train(tiny_folder, tmp_path / name, defense="pgd", pgd_steps=2, epochs=1)
    losses = [[r["loss"] for r in _records(tmp_path / name, "train")] for name in ("a", "b")]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("defense", ["pgd", "l2l", "rvs"])
@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_same_weights(tiny_folder, tmp_path, defense):
    # PGD and RvS draw random numbers, L2L and RvS have batch norm: resuming must restore the
    # generator's state and every network's statistics.
    kwargs = dict(defense=defense, pgd_steps=2, gen_width=0.25)
    full = _train(tiny_folder, tmp_path / "full", **kwargs)
    first = _train(tiny_folder, tmp_path / "parts", stop_after_steps=4, **kwargs)
    assert first.step == 4 and not first.finished
    second = _train(tiny_folder, tmp_path / "parts", **kwargs)
    assert second.step == full.step == 12
    for name in (EMA_WEIGHTS_FILE,):
        a, b = _load_h5(tmp_path / "full" / name), _load_h5(tmp_path / "parts" / name)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    resumed = _records(tmp_path / "parts", "start")
    assert [r["resumed"] for r in resumed] == [False, True]


def _load_h5(path):
    import h5py
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
def test_different_settings_in_the_same_run_dir_are_refused_and_nothing_is_written(tiny_folder, tmp_path):
    _train(tiny_folder, tmp_path / "run", epochs=1)
    before = sorted(str(p) for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(rundir.RunDirError, match="different settings.*train.lr"):
        _train(tiny_folder, tmp_path / "run", epochs=1, lr=1e-3)
    assert sorted(str(p) for p in (tmp_path / "run").rglob("*")) == before


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside(tiny_folder, tmp_path):
    _train(tiny_folder, tmp_path / "run", epochs=1)
    _train(tiny_folder, tmp_path / "run", epochs=1, lr=1e-3, overwrite=True)
    moved = list(tmp_path.glob("run.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "config.json").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["train.lr"] == 1e-3


@pytest.mark.slow
def test_a_longer_run_extends_a_finished_one(tiny_folder, tmp_path):
    _train(tiny_folder, tmp_path / "run", epochs=1)
    result = _train(tiny_folder, tmp_path / "run", epochs=2)
    assert result.step == 12 and [r["epoch"] for r in result.epoch_records] == [2]


@pytest.mark.slow
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_folder, tmp_path, monkeypatch):
    _train(tiny_folder, tmp_path / "run", epochs=1)
    good = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    real_batches = data.train_batches

    def poisoned(*args, **kwargs):  # corrupt data in the second epoch
        return real_batches(*args, **kwargs).map(lambda x, y: (x * float("nan"), y))

    monkeypatch.setattr(data, "train_batches", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss at step 7"):
        _train(tiny_folder, tmp_path / "run", epochs=2)
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")) == good


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.slow
def test_mixed_precision_trains_resumes_and_evaluates_in_float32(tiny_folder, tmp_path, precision):
    import keras

    from eval.runs import load_run
    run = tmp_path / "run"
    assert not _train(tiny_folder, run, defense="fgm", epochs=1, precision=precision, stop_after_steps=3).finished
    result = _train(tiny_folder, run, defense="fgm", epochs=1, precision=precision)  # the checkpoint round trip
    assert result.finished and result.step == 96 // 16
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    losses = [r["loss"] for r in _records(run, "train")]
    assert losses and all(np.isfinite(losses))
    model = load_run(run).build_classifier()  # evaluation rebuilds the classifier in float32
    assert all(w.dtype == "float32" for w in model.weights) and model.compute_dtype == "float32"
    logits = model(np.zeros((2, 16, 16, 3), np.float32))
    assert logits.dtype == tf.float32 and np.all(np.isfinite(logits.numpy()))


def test_bfloat16_on_a_cpu_where_it_is_slower_is_said_once_and_training_keeps_its_precision(
        tiny_folder, tmp_path, monkeypatch):
    from training import precision
    said, probes = [], []
    monkeypatch.setattr(precision, "has_accelerator", lambda: False)  # as on any CPU-only machine
    monkeypatch.setattr(precision, "bfloat16_speedup", lambda: probes.append(1) or 0.7)
    configs = _configs(tiny_folder, tmp_path / "run", epochs=1, precision="mixed_bfloat16", stop_after_steps=1)
    train(*configs, say=said.append)
    notes = [line for line in said if "bfloat16 ran a convolution probe at 0.70x" in line]
    assert len(notes) == 1 and "--precision float32" in notes[0] and probes == [1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["train.precision"] == "mixed_bfloat16"
    # where bfloat16 is the faster, or the run is in float32, nothing is probed or said
    monkeypatch.setattr(precision, "bfloat16_speedup", lambda: 2.0)
    said.clear()
    train(*_configs(tiny_folder, tmp_path / "fast", epochs=1, precision="mixed_bfloat16", stop_after_steps=1),
          say=said.append)
    assert not [line for line in said if "probe" in line]
    monkeypatch.setattr(precision, "bfloat16_speedup", lambda: pytest.fail("a float32 run probed bfloat16"))
    train(*_configs(tiny_folder, tmp_path / "f32", epochs=1, stop_after_steps=1), say=said.append)
    monkeypatch.setattr(precision, "has_accelerator", lambda: True)  # a GPU's bfloat16 is not probed
    assert precision.note_bfloat16_speed(said.append) is None


def test_the_bfloat16_probe_times_both_precisions():
    from training import precision
    ratio = precision.bfloat16_speedup(batch=4, size=8, channels=8, rounds=1, calls=1)
    assert np.isfinite(ratio) and ratio > 0  # which precision is faster depends on the CPU


@pytest.mark.parametrize("mixed, precision", [(True, "mixed_float16"), (False, "float32")])
def test_a_run_recorded_with_the_old_mixed_precision_flag_resumes_as_its_precision(tmp_path, mixed, precision):
    cfgs = dict(data=data.DataConfig(dataset="folder:x"), train=TrainConfig(precision=precision),
                defense=DefenseConfig(defense="fgm"))
    settings, defaults = rundir.flatten_settings(**cfgs), rundir.setting_defaults(**cfgs)
    older = {key: value for key, value in settings.items() if key != "train.precision"}
    older["train.mixed_precision"] = mixed
    rundir.create_run_dir(tmp_path / "run", {"settings": older}, overwrite=False)
    assert rundir.check_run_dir(tmp_path / "run", settings, overwrite=False, defaults=defaults)
    other = dict(settings, **{"train.precision": "mixed_bfloat16"})
    with pytest.raises(rundir.RunDirError, match=f"train.precision '{precision}' -> 'mixed_bfloat16'"):
        rundir.check_run_dir(tmp_path / "run", other, overwrite=False, defaults=defaults)


def test_a_run_made_before_a_setting_existed_resumes_at_that_settings_default(tmp_path):
    cfgs = dict(data=data.DataConfig(dataset="folder:x"), train=TrainConfig(), defense=DefenseConfig(defense="pgd"))
    settings, defaults = rundir.flatten_settings(**cfgs), rundir.setting_defaults(**cfgs)
    older = {key: value for key, value in settings.items() if key != "train.optimizer"}
    rundir.create_run_dir(tmp_path / "run", {"settings": older}, overwrite=False)
    assert rundir.check_run_dir(tmp_path / "run", settings, overwrite=False, defaults=defaults)
    from eval.runs import TrainedRun  # evaluation, reports and sweeps see the default too
    assert TrainedRun(tmp_path / "run", {"settings": older}).settings == settings
    sgd = dict(settings, **{"train.optimizer": "sgd"})
    with pytest.raises(rundir.RunDirError, match="train.optimizer 'adam' -> 'sgd'"):
        rundir.check_run_dir(tmp_path / "run", sgd, overwrite=False, defaults=defaults)


@pytest.mark.slow
def test_a_resumed_run_logs_each_step_once_and_marks_its_partial_epoch(tiny_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_folder, run, stop_after_steps=3, log_every_steps=1)  # checkpoint at step 3
    with open(run / "metrics.jsonl", "a") as log:  # what a part killed before its next checkpoint leaves
        for step in (4, 5):
            log.write(json.dumps({"step": step, "kind": "train", "loss": 9.0}) + "\n")
        log.write('{"step": 6, "kind": "tra')  # a line cut short by the kill
    result = _train(tiny_folder, run, log_every_steps=1)
    assert result.finished
    steps = [r["step"] for r in _records(run, "train")]
    assert steps == sorted(set(steps)) == list(range(1, result.step + 1))
    assert 9.0 not in [r["loss"] for r in _records(run, "train")]
    epochs = _records(run, "epoch_record")
    assert [(r["epoch"], r["partial"], r["includes_tracing"]) for r in epochs] == [(1, True, True), (2, False, False)]
    assert all(r["seconds_per_epoch"] > 0 and r["seconds_evaluating"] > 0 for r in epochs)
    assert [r["step"] for r in rundir.read_metrics(run, "train")] == steps


def test_the_one_metrics_reader_keeps_the_last_record_of_a_step_logged_twice(tmp_path):
    records = [{"step": 0, "kind": "start"}, {"step": 2, "kind": "train", "loss": 1.0},
               {"step": 2, "kind": "train", "loss": 0.5}, {"step": 2, "kind": "start"},
               {"step": 4, "kind": "epoch_record", "epoch": 1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r["loss"] for r in rundir.read_metrics(tmp_path, "train")] == [0.5]
    assert len(rundir.read_metrics(tmp_path, "start")) == 2 and len(rundir.read_metrics(tmp_path)) == 4


@pytest.mark.slow
def test_a_sweep_over_the_norm_trains_each_run_at_its_norms_radius(tiny_folder, tmp_path):
    from study.sweep import Sweep, run_sweep
    data_cfg, train_cfg, defense_cfg, run_cfg = _configs(tiny_folder, tmp_path / "unused", defense="rvs",
                                                         epochs=1, gen_width=0.25)
    assert defense_cfg.eps is None  # left to the norm, as run.py leaves an --eps not given
    status = run_sweep(str(tmp_path / "root"), Sweep.parse("rvs_norm=2,inf"), (0,), data_cfg, train_cfg,
                       defense_cfg, run_cfg, say=lambda *_: None)
    assert sorted(status.values()) == ["trained", "trained"]
    eps = {json.loads((tmp_path / "root" / f"rvs-rvs_norm{n}-seed0" / "config.json").read_text())
           ["settings"]["defense.eps"] for n in ("2", "inf")}
    assert eps == {0.5, 8 / 255}


@pytest.mark.slow
def test_clean_training_reports_no_training_attack(tiny_folder, tmp_path):
    lines = []
    train(*_configs(tiny_folder, tmp_path / "run", epochs=1), say=lines.append)
    epoch_line = next(line for line in lines if line.startswith("epoch 1:"))
    assert "no training attack" in epoch_line and "mean L2" not in epoch_line


# The defense settings config.json held before each defense declared its own: every defense's
# setting, at the defaults of that time, whatever the run's defense.
FLAT_DEFENSE_SETTINGS = {
    "defense.adv_coeff": 1.0, "defense.attacker_lr": 0.001, "defense.c_l": 50.0, "defense.eps": 0.5,
    "defense.gen_init": "glorot_uniform", "defense.gen_width": 1.0, "defense.l2l_norm": "2",
    "defense.l2l_variant": "grad", "defense.label_smoothing": 0.5, "defense.ot_weight": 1.0,
    "defense.pgd_steps": 10, "defense.pgn_classifier_grad": "fixed", "defense.pgn_grad": "prob",
    "defense.pgn_grad_scale": "batch_mean", "defense.pgn_inputs": "grad,image,label",
    "defense.pgn_update": "simultaneous", "defense.rvs_gen_lr": 0.01, "defense.rvs_norm": "inf",
    "defense.rvs_z_dim": 640}


def _as_flat_config(run_dir: Path) -> dict:
    """Rewrites a run's config.json as the flat-config code wrote it; returns today's settings."""
    config = json.loads((run_dir / "config.json").read_text())
    today = config["settings"]
    config["settings"] = {**{k: v for k, v in today.items() if not k.startswith("defense.")},
                          **FLAT_DEFENSE_SETTINGS, "defense.defense": today["defense.defense"],
                          "defense.eps": today["defense.eps"], "defense.gen_width": today["defense.gen_width"]}
    (run_dir / "config.json").write_text(json.dumps(config))
    return today


def test_runs_recorded_with_every_defenses_settings_resume_evaluate_and_report_their_sweep(tiny_folder, tmp_path):
    from eval.runs import load_run
    from study.report import discover, group
    root = tmp_path / "root"
    today = {}
    for eps in (0.25, 0.5):
        run = root / f"fgm-eps{eps:g}-seed3"
        assert _train(tiny_folder, run, defense="fgm", eps=eps, epochs=1).finished
        today[run] = _as_flat_config(run)
        assert "defense.c_l" not in today[run] and "defense.pgd_steps" not in today[run]
    run = root / "fgm-eps0.25-seed3"
    resumed = _train(tiny_folder, run, defense="fgm", eps=0.25, epochs=2)  # not refused as other settings
    assert resumed.finished and resumed.step == 2 * (96 // 16)
    # other defenses' settings dropped, this one's kept; the lengthened run records its new epoch count
    assert load_run(run).settings == {**today[run], "train.epochs": 2}
    runs, unfinished = discover(root)
    assert not unfinished and len(runs) == 2
    assert [m.swept for m in group(runs)["fgm"]] == ["defense.eps", "defense.eps"]  # not c_l, pgd_steps, ...
    with pytest.raises(rundir.RunDirError, match="different settings.*defense.eps"):
        _train(tiny_folder, run, defense="fgm", eps=0.5, epochs=2)


def test_an_l2l_run_made_before_attacker_sizes_existed_reads_as_the_wide_attacker(tmp_path):
    stored = {"data.dataset": "folder:x", "train.lr": 5e-4, **FLAT_DEFENSE_SETTINGS, "defense.defense": "l2l"}
    settings = rundir.recorded_settings(stored)
    assert settings["defense.l2l_attacker"] == "wide"  # the four-block attacker those runs were built with
    assert "defense.c_l" not in settings and settings["defense.attacker_lr"] == 0.001


@pytest.mark.slow
def test_stop_at_benign_finishes_early_on_the_full_runs_trajectory(tiny_folder, tmp_path):
    # A Table 2 run needs epochs only until its benign accuracy reaches the matched one: stopped
    # there, it is the full run up to that epoch (same seed, no schedule tied to the epoch count).
    full = _train(tiny_folder, tmp_path / "full", epochs=3, keep_checkpoints="all")
    accuracies = [r["test_acc"] for r in full.epoch_records]
    threshold = accuracies[1]
    expected = next(i for i, a in enumerate(accuracies) if a >= threshold) + 1  # epoch 1 or 2 of 3
    run = tmp_path / "early"
    early = _train(tiny_folder, run, epochs=3, stop_at_benign=threshold)
    assert early.finished and early.finished_early and early.step < early.total_steps
    assert [r["test_acc"] for r in early.epoch_records] == accuracies[:expected]
    assert (run / rundir.EPOCHS_DIR / rundir.epoch_weights_name(expected)).exists()  # kept for matching
    event = rundir.finished_event(run, 3)
    assert event["early"] and event["epoch"] == expected and event["test_acc"] == threshold
    assert rundir.is_finished(run, 3, threshold) and not rundir.is_finished(run, 3)
    if threshold < 1.0:
        assert not rundir.is_finished(run, 3, threshold + 1e-6)  # a higher bar: not reached
    again = _train(tiny_folder, run, epochs=3, stop_at_benign=threshold)  # the same command: nothing to do
    assert again.finished_early and again.step == early.step and not again.epoch_records
    rest = _train(tiny_folder, run, epochs=3)  # without the flag it trains on to its end
    assert rest.finished and not rest.finished_early and rest.step == full.step
    assert rundir.is_finished(run, 3) and not rundir.finished_event(run, 3).get("early")
    with pytest.raises(ValueError, match="stop_at_benign"):
        RunConfig(stop_at_benign=1.5).validate()


def test_a_run_that_never_reaches_stop_at_benign_stays_a_table_run(tiny_folder, tmp_path):
    # Trained to its last epoch without reaching the target (a study's matching.max_epochs): its log
    # says what it aimed at, so a report compares it in Table 2 and draws no curve point for it.
    from study.plan import discover
    run = tmp_path / "root" / "never"
    result = _train(tiny_folder, run, epochs=1, stop_at_benign=1.0)
    assert result.finished and not result.finished_early
    event = rundir.finished_event(run, 1)
    assert event["stop_at_benign"] == 1.0 and not event.get("early") and rundir.is_finished(run, 1, 1.0)
    (found,), _ = discover(tmp_path / "root")
    assert found.finished_early
    plain = tmp_path / "plain" / "full"
    _train(tiny_folder, plain, epochs=1)
    assert "stop_at_benign" not in rundir.finished_event(plain, 1)
    (found,), _ = discover(tmp_path / "plain")
    assert not found.finished_early
