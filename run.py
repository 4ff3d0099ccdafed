"""Command line: adversarial training with perturbation generator networks and its baselines.

    python run.py --mode train --defense pgd --dataset folder:../shared/data/cifar10-jpeg --preset cpu

Bad input (an unknown flag value, a run directory holding other settings, data that cannot be
found) ends with one line on stderr and exit code 2, before anything is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from absl import app, flags, logging  # noqa: E402

from configs import PRESETS  # noqa: E402
from configs.settings import check_finite, check_settings, flag_fields  # noqa: E402
from data.dataset import DataConfig  # noqa: E402
from eval.config import EVAL_PRESETS, EvalConfig  # noqa: E402
from study.report_config import ReportConfig  # noqa: E402
from study.options import Options as StudyOptions  # noqa: E402
from training.config import DefenseConfig, RunConfig, TrainConfig  # noqa: E402
from training.defenses import NAMES as DEFENSE_NAMES, SETTINGS as DEFENSE_SETTINGS  # noqa: E402
from training.defenses.settings import declared_fields  # noqa: E402
from training import native_stderr, rundir  # noqa: E402

MODES = ("train", "eval", "sweep", "report", "study")
EXIT_BAD_INPUT = 2

FLAGS = flags.FLAGS
_LIBRARY_FLAGS = frozenset(FLAGS)  # absl's own (--logtostderr, ...), left out of config.json


def _define_setting(field, owner: str = "") -> None:
    """A typed absl flag from a declared setting (configs/settings.py): its choices as an enum, its
    kind, its default. Every config's flags come from here, so a flag's default is its setting's."""
    meta, text = field.metadata, f"{owner}{field.metadata['help']}"
    if meta["kind"] is tuple and meta["repeated"]:
        flags.DEFINE_multi_string(field.name, list(field.default) or None, text)
    elif meta["kind"] is tuple:
        flags.DEFINE_list(field.name, [v if meta["of"] is str else f"{v:g}" for v in field.default], text)
    elif meta["choices"] is not None:
        flags.DEFINE_enum(field.name, field.default, list(meta["choices"]), text)
    else:
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                  str: flags.DEFINE_string}[meta["kind"]]
        define(field.name, field.default, text)


flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_enum("preset", None, sorted(PRESETS), "Named training settings (configs/presets.py) for --mode train, "
                  "sweep and report (not eval: see --eval_preset); explicit flags win.")
# Data, then optimisation (Table 1 defaults): data/dataset.py DataConfig, training/config.py TrainConfig.
for _field in flag_fields(DataConfig) + flag_fields(TrainConfig):
    _define_setting(_field)
flags.DEFINE_boolean("mixed_precision", None, "Deprecated: the same as --precision mixed_float16.")
# Defense: --defense, then every declared setting (training/defenses/*_settings.py).
flags.DEFINE_enum("defense", DefenseConfig.defense, DEFENSE_NAMES,
                  "Training method: " + ", ".join(f"{n} ({c.title})" for n, c in DEFENSE_SETTINGS.items()) + ".")
for _field in declared_fields(DefenseConfig):
    _define_setting(_field)
for _name, _settings in DEFENSE_SETTINGS.items():
    for _field in declared_fields(_settings):
        _define_setting(_field, f"{_settings.title} (--defense {_name}): ")
# Run directory (training/config.py RunConfig; --run_dir also names the runs an evaluation reads).
flags.DEFINE_multi_string("run_dir", None, "train: the run directory (default runs/<dataset>-<defense>-w<width>-"
                          "seed<seed>); an existing run with the same settings is resumed. eval: runs to "
                          "evaluate (repeat the flag).")
for _field in flag_fields(RunConfig):
    _define_setting(_field)
# Sweeps (--mode sweep) and the report (--mode report: study/report_config.py ReportConfig)
flags.DEFINE_string("root", None, "sweep / report: the directory holding the sweep's runs.")
flags.DEFINE_string("sweep", "", "sweep: NAME=V1,V2,... one run per value (e.g. eps=0.1,0.3 or c_l=10,50); "
                    "empty: seeds only.")
flags.DEFINE_list("seeds", None, "sweep: seeds, one run per value and seed (default: --seed).")
flags.DEFINE_boolean("dry_run", False, "sweep: train nothing; say which planned runs have finished, how far "
                     "the others got, and the training time each has left, estimated from the step rate of a run "
                     "under --root that trains as it would.")
for _field in flag_fields(ReportConfig):
    _define_setting(_field)
# Studies (--mode study): a spec file (studies/*.toml) run on an engine
flags.DEFINE_string("spec", None, "study: the study's spec (TOML; docs/studies.md), e.g. studies/smoke.toml.")
for _field in flag_fields(StudyOptions):
    _define_setting(_field)
flags.DEFINE_boolean("status", False, "study: train nothing; say what is done, what is running where, what is "
                     "left and the hours it needs.")
# Evaluation (--mode eval): eval/config.py EvalConfig, the paper's Table 1 attack settings by default
# (its test_limit, cache_dir and batch_size are the data and training flags above).
for _field in flag_fields(EvalConfig):
    _define_setting(_field)
# This tool's flags, for config.json: TensorFlow registers more absl flags (--test_srcdir, ...) when
# it loads, after this line, and those are not ours to record.
_TOOL_FLAGS = tuple(name for name in FLAGS if name not in _LIBRARY_FLAGS)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(str(err).splitlines()[0])


def _fail(message: str, code: int = EXIT_BAD_INPUT):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _load_tensorflow() -> None:
    """Hides what TensorFlow's C++ runtime prints while it loads (oneDNN and CUDA probes) unless
    TF_CPP_MIN_LOG_LEVEL asks for it, so that the terminal shows our messages; if loading fails,
    what was hidden is shown after all."""
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") >= "2"
    with native_stderr.held_back(show=lambda error: error is not None) if quiet else contextlib.nullcontext():
        import tensorflow as tf
        tf.config.list_physical_devices()  # probes CUDA now, while stderr is quiet


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# The one preset rule: a flag given on the command line wins, then the preset of this mode, then the
# flag's default (its setting's). --preset holds training settings: it applies where runs are trained
# (train, sweep) and to the report, which must read its runs' test subset (cpu_repro's test_limit);
# --eval_preset holds evaluation settings: eval and report, over --preset there. --mode eval refuses
# --preset (main): a training preset would change the evaluation (smoke: batch size 64, 512 images).
_PRESET_MODES = {"preset": ("train", "sweep", "report"), "eval_preset": ("eval", "report")}


def _preset() -> dict:
    """{flag: value} of the presets that apply to this --mode, --eval_preset's over --preset's."""
    chosen = {}
    for flag, table in (("preset", PRESETS), ("eval_preset", EVAL_PRESETS)):
        if FLAGS[flag].value and FLAGS.mode in _PRESET_MODES[flag]:
            chosen.update(table[FLAGS[flag].value])
    return chosen


def _value(name: str):
    """The flag's value: from the command line if given there, else the mode's preset's, else the default."""
    if not FLAGS[name].present:
        preset = _preset()
        if name in preset:
            return preset[name]
        if name == "precision" and FLAGS.mixed_precision is not None:
            return "mixed_float16" if FLAGS.mixed_precision else "float32"
    return FLAGS[name].value


def _setting(field: dataclasses.Field):
    """The value of a declared setting's flag as its config takes it (a tuple setting's items parsed)."""
    value = _value(field.name)
    if field.metadata.get("kind") is not tuple:
        return value
    try:
        return tuple(field.metadata["of"](v) for v in value or ())
    except ValueError:
        raise ValueError(f"--{field.name} takes comma-separated numbers, got {','.join(value)}") from None


def _configs():
    run_dirs = FLAGS.run_dir or []
    if len(run_dirs) > 1:
        raise ValueError("--mode train takes one --run_dir")

    def build(cls):
        values = {f.name: _value(f.name) for f in flag_fields(cls)}
        if cls is RunConfig:
            values["run_dir"] = run_dirs[0] if run_dirs else ""
        return cls(**values)

    return build(DataConfig), build(TrainConfig), _defense_config(), build(RunConfig)


def _defense_config():
    """The chosen defense with the shared settings and its own; a setting of another defense given
    on the command line is refused (it would silently do nothing)."""
    defense = _value("defense")
    names = DefenseConfig.setting_names(defense)
    for other in DEFENSE_SETTINGS.values():
        for field in declared_fields(other):
            if FLAGS[field.name].present and field.name not in names:
                raise ValueError(f"--{field.name} is a setting of --defense {other.name}, not of --defense {defense} "
                                 f"(its settings: {', '.join(names)})")
    return DefenseConfig(defense, **{name: _value(name) for name in names})


def _eval_config() -> EvalConfig:
    return EvalConfig(run_dirs=tuple(FLAGS.run_dir or ()),
                      **{f.name: _setting(f) for f in dataclasses.fields(EvalConfig) if f.name != "run_dirs"})


def _report_config() -> ReportConfig:
    return ReportConfig(**{f.name: _setting(f) for f in dataclasses.fields(ReportConfig)})


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected argument {argv[1]!r}: every setting is a --flag (see --help)")
    logging.set_verbosity(logging.ERROR)  # tfds warns about every unprepared folder it probes
    _check_finite_flags()
    if FLAGS.mode == "study":
        return _study()
    if FLAGS.dry_run and FLAGS.mode != "sweep":
        _fail(f"--dry_run lists what a sweep would train: use it with --mode sweep, not --mode {FLAGS.mode}")
    if FLAGS.mode == "eval" and FLAGS["preset"].present:
        _fail(f"--preset {FLAGS.preset} holds training settings and --mode eval trains nothing: use --eval_preset "
              f"({' or '.join(EVAL_PRESETS)}) or explicit flags")
    try:  # before loading TensorFlow or any data: bad flags fail instantly
        if FLAGS.mode == "eval":
            _eval_config().validate()
        if FLAGS.mode == "report":
            _report_config().validate()
        if FLAGS.mode == "sweep":
            _sweep_plan()
    except ValueError as err:
        _fail(str(err))
    _load_tensorflow()
    {"eval": _evaluate, "train": _train, "sweep": _sweep, "report": _report}[FLAGS.mode]()


def _check_finite_flags() -> None:
    """nan and inf parse as numbers but mean nothing as a setting: refused before any work."""
    def number(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v  # not a number: the flag's own parser (or its config) reports it

    for name in _TOOL_FLAGS:
        value = _value(name)
        try:
            check_finite(name, [number(v) for v in value] if isinstance(value, (list, tuple)) else value)
        except ValueError as err:
            _fail(str(err))


def _evaluate():
    from eval.evaluate import evaluate
    try:
        evaluate(_eval_config())
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every finished attack is cached; the same command goes on
        sys.exit(130)


def _train():
    from training.loop import train

    result = _training(lambda: train(*_configs(), flags=_used_flags()))
    if result.step > result.total_steps:
        print(f"nothing to train: {result.run_dir} is already at step {result.step}, past the "
              f"{result.total_steps} steps that --epochs asks for")
        return
    state = "finished early" if result.finished_early else "finished" if result.finished else "stopped"
    print(f"{state} at step {result.step}/{result.total_steps}; run directory {result.run_dir}")


def _sweep_plan():
    """(the parsed --sweep, the seeds): a ValueError naming the flag for either, or for --run_dir."""
    from study.sweep import Sweep

    if FLAGS.run_dir:
        raise ValueError("--mode sweep names its runs itself under --root: drop --run_dir")
    try:
        seeds = tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else (_value("seed"),)
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, got {','.join(FLAGS.seeds)}") from None
    return Sweep.parse(FLAGS.sweep, _value("defense")), seeds


def _sweep():
    from study.sweep import dry_run, run_sweep

    def sweep():
        sweep_spec, seeds = _sweep_plan()
        if FLAGS.dry_run:
            data_cfg, train_cfg, defense_cfg, run_cfg = _configs()
            return dry_run(FLAGS.root, sweep_spec, seeds, data_cfg, train_cfg, defense_cfg,
                           stop_at_benign=run_cfg.stop_at_benign)
        return run_sweep(FLAGS.root, sweep_spec, seeds, *_configs(), flags=_used_flags())

    status = _training(sweep)
    if FLAGS.dry_run:
        return
    outcomes = [s.split(":")[0] for s in status.values()]
    counts = {s: outcomes.count(s) for s in ("trained", "resumed", "skipped", "stopped", "failed")}
    print("sweep: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; runs under {FLAGS.root}")
    if counts["failed"]:
        sys.exit(1)


def _training(work):
    """Runs ``work`` (training) with the command line's error handling: bad input exit 2, a
    diverged run exit 1, Ctrl-C or `kill` exit 130 after the checkpoint is saved."""
    from training.loop import TrainingError

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` saves a checkpoint, as Ctrl-C does
    try:
        return work()
    except TrainingError as err:
        _fail(str(err), code=1)
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        sys.exit(130)


def _used_flags() -> dict:
    return {name: _value(name) for name in _TOOL_FLAGS}


def _report():
    from study.report import build_report
    try:
        cfg, evaluation = _report_config(), _eval_config()
        if FLAGS.spec:  # a study's report of the runs finished so far, with the study's settings
            cfg, evaluation = _spec_report_settings()
        build_report(FLAGS.root, evaluation, cfg.match_benign, cfg.match_tolerance, cfg.curve_test_limit,
                     figure2_epochs=cfg.figure2_epochs, autoattack_complete=cfg.autoattack_complete,
                     prior_reports=cfg.prior_report, dataset_label=cfg.dataset_label, table_names=cfg.table_runs)
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)


def _spec_report_settings() -> tuple[ReportConfig, EvalConfig]:
    """--mode report --spec FILE: the report and evaluation settings the study's own report uses."""
    from study.spec import SpecError, load
    given = [f"--{f.name}" for f in (*dataclasses.fields(ReportConfig), *dataclasses.fields(EvalConfig))
             if f.name in FLAGS and FLAGS[f.name].present]
    if given:
        _fail(f"--mode report --spec takes its settings from {FLAGS.spec}, not {given[0]}")
    try:
        spec = load(FLAGS.spec, FLAGS.dataset if FLAGS["dataset"].present else None)
    except SpecError as err:
        _fail(str(err))
    from pathlib import Path
    from study.runner import restore_logs
    root = Path(FLAGS.root or ".").absolute()
    if spec.report["training_logs"]:  # the committed runs (a fresh checkout, a lost machine) stand as evaluated
        from study.checks import check_root
        try:
            check_root(root)
        except SpecError as err:
            _fail(str(err))
        root.mkdir(parents=True, exist_ok=True)
        restore_logs(spec, root)
    evaluation = spec.eval_config(root)
    source = Path(evaluation.source_run) if evaluation.source_run else None
    if source and not (source / rundir.CONFIG_FILE).exists():  # a fresh root: only the committed runs are there
        print(f"{source}: the black-box source is not under --root; the committed evaluations hold their "
              f"black-box numbers, and a run evaluated here gets none")
        evaluation = dataclasses.replace(evaluation, source_run=None)
    return spec.report_config(), evaluation


def _study():
    """A study: its spec read and checked first (one line and exit 2 for any fault, nothing
    started), then its jobs on the engine (study/runner.py)."""
    if not FLAGS.spec or not FLAGS.root:
        _fail("--mode study needs --spec FILE (studies/*.toml) and --root DIR (where its runs live)")
    given = [f"--{n}" for n in ("run_dir", "preset", "sweep", "seeds") if FLAGS[n].present]
    if given:
        _fail(f"--mode study takes its settings from --spec {FLAGS.spec}, not {given[0]}")
    _load_tensorflow()  # the spec's checks read the datasets' and defenses' declarations, which load it
    from study.engines import EngineError
    from study.spec import SpecError, load
    try:
        spec = load(FLAGS.spec, FLAGS.dataset if FLAGS["dataset"].present else None)
        if FLAGS.status:
            from study.status import show_status
            return show_status(spec, FLAGS.root)
        from study.runner import run_study
        options = StudyOptions(**{f.name: FLAGS[f.name].value for f in flag_fields(StudyOptions)})
        check_settings(options)
        signal.signal(signal.SIGTERM, _interrupt)
        code = run_study(spec, FLAGS.root, options)
    except (SpecError, EngineError) as err:
        _fail(str(err))
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    sys.exit(code)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
