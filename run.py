"""Command line: adversarial training with perturbation generator networks and its baselines.

    python run.py --mode train --defense pgd --dataset folder:../shared/data/cifar10-jpeg --preset cpu

Bad input (an unknown flag value, a run directory holding other settings, data that cannot be
found) ends with one line on stderr and exit code 2, before anything is written.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from absl import app, flags, logging  # noqa: E402

from configs import PRESETS  # noqa: E402
from eval.config import (ATTACKS, AUTOATTACK_NORMS, AUTOATTACK_PARTS, AUTOATTACK_VERSIONS, DEFAULT_ATTACKS,  # noqa: E402
                         ENGINES, EVAL_PRESETS, EvalConfig)
from training.config import OPTIMIZERS, PRECISIONS, STRATEGIES, DefenseConfig  # noqa: E402
from training.defenses import NAMES as DEFENSE_NAMES, SETTINGS as DEFENSE_SETTINGS  # noqa: E402
from training.defenses.settings import declared_fields  # noqa: E402
from training import stderr_filter  # noqa: E402

MODES = ("train", "eval", "sweep", "report", "study")
EXIT_BAD_INPUT = 2

FLAGS = flags.FLAGS
_LIBRARY_FLAGS = frozenset(FLAGS)  # absl's own (--logtostderr, ...), left out of config.json
flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_enum("preset", None, sorted(PRESETS), "Named settings (configs/presets.py); explicit flags win.")
# Data
flags.DEFINE_string("dataset", "cifar10",
                    "cifar10, cifar100, svhn_cropped, mnist (tensorflow-datasets) or folder:PATH "
                    "(PATH/{train,test}/<class>/*).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir holding a prepared copy.")
flags.DEFINE_string("cache_dir", None, "Decoded-image cache folder (default <data_dir>/decoded_cache); not a setting.")
flags.DEFINE_integer("train_limit", 0, "Train on a deterministic class-balanced subset of this size (0: all).")
flags.DEFINE_integer("test_limit", 0, "Evaluate on a deterministic class-balanced subset of this size (0: all).")
flags.DEFINE_boolean("allow_missing_classes", False, "Train and evaluate although a class has images in one split "
                     "and none in the other (refused otherwise: accuracy would be over fewer classes).")
flags.DEFINE_enum("augment", "auto", ["auto", "none", "shift", "flip_shift"],
                  "auto: random flip + 4 px shift for CIFAR and folders, shift only for digits.")
# Optimisation (Table 1 defaults)
flags.DEFINE_integer("epochs", 200, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("lr", 5e-4, "Adam learning rate.")
flags.DEFINE_float("ema_decay", 0.998, "Decay of the weight average that is evaluated.")
flags.DEFINE_boolean("ema_warmup", True, "Ramp the EMA decay up as (1+t)/(10+t) (tf.train.ExponentialMovingAverage).")
flags.DEFINE_float("width", 1.0, "Multiplier of the classifier's filter counts (0.25 for CPU runs).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order, augmentation and random starts.")
flags.DEFINE_enum("precision", "float32", PRECISIONS, "Compute policy: float32, mixed_float16 (GPUs; ~9x slower on "
                  "a CPU; loss-scaled) or mixed_bfloat16 (CPUs with AMX, some with AVX512-BF16: training says when a "
                  "probe finds it slower than float32 here; TPUs, Ampere+ GPUs).")
flags.DEFINE_boolean("mixed_precision", None, "Deprecated: the same as --precision mixed_float16.")
# Defense: --defense, then every declared setting (training/defenses/*_settings.py), each default
# written once in its declaration.
flags.DEFINE_enum("defense", DefenseConfig.defense, DEFENSE_NAMES,
                  "Training method: " + ", ".join(f"{n} ({c.title})" for n, c in DEFENSE_SETTINGS.items()) + ".")


def _define_setting(field, owner: str = "") -> None:
    """A typed absl flag from a declared setting: its choices as an enum, its kind, its default."""
    meta, text = field.metadata, f"{owner}{field.metadata['help']}"
    if meta["choices"] is not None:
        flags.DEFINE_enum(field.name, field.default, list(meta["choices"]), text)
    else:
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                  str: flags.DEFINE_string}[meta["kind"]]
        define(field.name, field.default, text)


for _field in declared_fields(DefenseConfig):
    _define_setting(_field)
for _name, _settings in DEFENSE_SETTINGS.items():
    for _field in declared_fields(_settings):
        _define_setting(_field, f"{_settings.title} (--defense {_name}): ")
# Run directory and reporting
flags.DEFINE_multi_string("run_dir", None, "train: the run directory (default runs/<dataset>-<defense>-w<width>-"
                          "seed<seed>); an existing run with the same settings is resumed. eval: runs to "
                          "evaluate (repeat the flag).")
flags.DEFINE_boolean("overwrite", False, "Move an existing --run_dir aside and start afresh.")
flags.DEFINE_integer("log_every_steps", 50, "TensorBoard / metrics.jsonl cadence in steps.")
flags.DEFINE_float("checkpoint_every_minutes", 10.0, "Checkpoint this often within an epoch (0: epoch ends only).")
flags.DEFINE_integer("monitor_size", 512, "Test examples attacked with the training attack each epoch.")
flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept in <run_dir>/checkpoints.")
flags.DEFINE_integer("stop_after_steps", 0, "Save and stop once this many steps are done (0: never).")
flags.DEFINE_float("stop_at_benign", 0.0, "Finish early after the first epoch whose benign test accuracy reaches this "
                   "(0: never): a Table 2 run matched at that accuracy needs no more (the report draws no curve "
                   "point for it).")
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "adam (Table 1) or sgd (momentum 0.9, as L2L's public "
                  "code, without its schedule); --lr sets the learning rate of either.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute: default (one device), mirrored (every "
                  "GPU of this machine, or --cpu_replicas logical CPUs without one) or multi_worker (TF_CONFIG).")
flags.DEFINE_integer("cpu_replicas", 2, "--strategy mirrored on a machine without GPU: logical CPU devices.")
flags.DEFINE_string("keep_checkpoints", "last", "Keep the EMA classifier of every epoch (all), of the last "
                    "(last), or of every N-th epoch and the last (N), for --match_benign.")
# Sweeps and the report (--mode sweep / --mode report)
flags.DEFINE_string("root", None, "sweep / report: the directory holding the sweep's runs.")
flags.DEFINE_string("sweep", "", "sweep: NAME=V1,V2,... one run per value (e.g. eps=0.1,0.3 or c_l=10,50); "
                    "empty: seeds only.")
flags.DEFINE_list("seeds", None, "sweep: seeds, one run per value and seed (default: --seed).")
flags.DEFINE_boolean("dry_run", False, "sweep: train nothing; say which planned runs have finished, how far "
                     "the others got, and the training time each has left, estimated from the step rate of a run "
                     "under --root that trains as it would.")
flags.DEFINE_string("match_benign", "lowest", "report: benign accuracy at which defenses are compared: a "
                    "number, clean (the clean runs' accuracy), lowest (the least accurate table run's final "
                    "accuracy) or none (final weights).")
flags.DEFINE_integer("curve_test_limit", 0, "report: CW-L2 for the curves on a fixed random subset of this many "
                     "test images (0: all of --test_limit's).")
flags.DEFINE_integer("figure2_epochs", 6, "report: Figure 2's FGM-AT run over its epochs on at most this many "
                     "kept epochs, evenly spaced, the last included (each costs a CW-L2 run).", lower_bound=1)
flags.DEFINE_integer("autoattack_complete", 0, "report with --autoattack_version custom --autoattack_attacks "
                     "apgd-ce,apgd-t: run the standard version's other attacks (FAB-T, Square) on a fixed random "
                     "subset of this many test images of every table run (0: none), for the standard AutoAttack's "
                     "robust accuracy there.", lower_bound=0)
flags.DEFINE_float("match_tolerance", 0.01, "report: a matched checkpoint further than this from the target is "
                   "reported as unmatched.")
# Studies (--mode study): a spec file (studies/*.toml) run on an engine
flags.DEFINE_string("spec", None, "study: the study's spec (TOML; docs/studies.md), e.g. studies/smoke.toml.")
flags.DEFINE_enum("engine", "local", ["local", "ray"], "study: local (one job at a time on this machine) or ray "
                  "(each training run and evaluation a Ray task).")
flags.DEFINE_string("ray_address", None, "study --engine ray: auto or HOST:PORT of a running Ray cluster to join "
                    "(default: start a Ray instance on this machine).")
flags.DEFINE_float("cpus_per_run", None, "study: CPUs (and TensorFlow threads) per job (default: every core "
                   "with --engine local, 1 with --engine ray).")
flags.DEFINE_float("gpus_per_run", 0.0, "study --engine ray: GPUs per job.")
flags.DEFINE_boolean("status", False, "study: train nothing; say what is done, what is running where, what is "
                     "left and the hours it needs.")
# Evaluation (--mode eval): the paper's Table 1 attack settings by default
_EVAL = EvalConfig(run_dirs=())
flags.DEFINE_list("attacks", list(DEFAULT_ATTACKS), f"eval: attacks to run, from {','.join(ATTACKS)}.")
flags.DEFINE_string("source_run", None, "eval: run on which black-box attacks are crafted.")
flags.DEFINE_multi_string("prior_report", None, "report: an earlier report's report.json (same evaluation protocol) "
                          "whose numbers stand in for runs under --root that hold their training log but no weights.")
flags.DEFINE_string("eval_dir", None, "eval: where results go (default <first run>/eval).")
flags.DEFINE_float("fgm_eps", _EVAL.fgm_eps, "eval: FGM L2 eps.")
flags.DEFINE_float("mim_eps", _EVAL.mim_eps, "eval: MIM L2 eps.")
flags.DEFINE_integer("mim_iters", _EVAL.mim_iters, "eval: MIM iterations.")
flags.DEFINE_float("mim_eps_iter", _EVAL.mim_eps_iter, "eval: MIM step.")
flags.DEFINE_integer("deepfool_iters", _EVAL.deepfool_iters, "eval: DeepFool iterations.")
flags.DEFINE_float("deepfool_overshoot", _EVAL.deepfool_overshoot, "eval: DeepFool overshoot.")
flags.DEFINE_integer("deepfool_candidates", _EVAL.deepfool_candidates, "eval: DeepFool candidate classes.")
flags.DEFINE_integer("cw_iters", _EVAL.cw_iters, "eval: CW-L2 iterations per binary-search step.")
flags.DEFINE_integer("cw_binary_steps", _EVAL.cw_binary_steps, "eval: CW-L2 binary-search steps.")
flags.DEFINE_float("cw_lr", _EVAL.cw_lr, "eval: CW-L2 Adam learning rate.")
flags.DEFINE_float("cw_initial_const", _EVAL.cw_initial_const, "eval: CW-L2 initial constant.")
flags.DEFINE_float("masking_eps", _EVAL.masking_eps, "eval: L2 budget of the large-budget PGD check.")
flags.DEFINE_integer("masking_iters", _EVAL.masking_iters, "eval: iterations of the large-budget PGD check.")
flags.DEFINE_list("pgn_c_l", [f"{v:g}" for v in _EVAL.pgn_c_l], "eval --attacks pgn: c_L sweep (Figure 3).")
flags.DEFINE_integer("pgn_epochs", _EVAL.pgn_epochs, "eval --attacks pgn: generator training epochs.")
flags.DEFINE_integer("pgn_train_limit", _EVAL.pgn_train_limit, "eval --attacks pgn: training images used.")
flags.DEFINE_list("pgn_eps", [f"{v:g}" for v in _EVAL.pgn_eps], "eval --attacks pgn: FGM/PGD eps sweep.")
flags.DEFINE_float("pgd_eps", _EVAL.pgd_eps, "eval --attacks pgd: L2 PGD eps (random start, step 2.5 eps/iters).")
flags.DEFINE_integer("pgd_iters", _EVAL.pgd_iters, "eval --attacks pgd: PGD iterations.")
flags.DEFINE_enum("attack_engine", _EVAL.attack_engine, list(ENGINES), "eval: FGM and MIM from this project's "
                  "compiled attacks, or from cleverhans.tf2.attacks itself.")
flags.DEFINE_enum("eval_preset", None, list(EVAL_PRESETS), "eval: quick (200 images, fewer iterations, AutoAttack "
                  "apgd-ce,apgd-t) or standard (Table 1's settings, all test images, standard AutoAttack); "
                  "explicit flags win.")
flags.DEFINE_enum("autoattack_version", _EVAL.autoattack_version, list(AUTOATTACK_VERSIONS),
                  "eval --attacks autoattack: standard (APGD-CE, APGD-T, FAB-T, Square), rand, or custom.")
flags.DEFINE_list("autoattack_attacks", list(_EVAL.autoattack_attacks), "eval --autoattack_version custom: "
                  f"attacks in order, from {','.join(AUTOATTACK_PARTS)}.")
flags.DEFINE_enum("autoattack_norm", _EVAL.autoattack_norm, list(AUTOATTACK_NORMS), "eval: AutoAttack threat model.")
flags.DEFINE_float("autoattack_eps", None, "eval: AutoAttack radius (default 0.5 for L2, 8/255 for L-inf).")
flags.DEFINE_integer("autoattack_iters", _EVAL.autoattack_iters, "eval: APGD and FAB iterations in AutoAttack.")
flags.DEFINE_integer("autoattack_square_queries", _EVAL.autoattack_square_queries, "eval: Square's queries.")
flags.DEFINE_integer("autoattack_seed", _EVAL.autoattack_seed, "eval: AutoAttack's seed.")
flags.DEFINE_list("autoattack_curve", [f"{v:g}" for v in _EVAL.autoattack_curve], "eval: multiples of "
                  "--autoattack_eps at which APGD-CE runs for the monotonicity check (empty: none).")
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


@contextlib.contextmanager
def _quiet_stderr():
    """Hides what TensorFlow's C++ runtime prints while it loads (oneDNN and CUDA probes) unless
    TF_CPP_MIN_LOG_LEVEL asks for it, so that the terminal shows our messages; if loading fails,
    what was hidden is shown after all."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load_tensorflow() -> None:
    with _quiet_stderr():
        import tensorflow as tf
        tf.config.list_physical_devices()  # probes CUDA now, while stderr is quiet


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _value(name: str):
    """The flag's value: from the command line if given there, else the preset's, else the default."""
    if FLAGS.preset and not FLAGS[name].present and name in PRESETS[FLAGS.preset]:
        return PRESETS[FLAGS.preset][name]
    if name == "precision" and not FLAGS[name].present and FLAGS.mixed_precision is not None:
        return "mixed_float16" if FLAGS.mixed_precision else "float32"
    return FLAGS[name].value


def _configs():
    import data
    from training.config import RunConfig, TrainConfig

    run_dirs = FLAGS.run_dir or []
    if len(run_dirs) > 1:
        raise ValueError("--mode train takes one --run_dir")

    def build(cls):
        values = {f.name: _value(f.name) for f in cls.__dataclass_fields__.values() if f.name != "run_dir"}
        if cls is RunConfig:
            values["run_dir"] = run_dirs[0] if run_dirs else ""
        return cls(**values)

    return build(data.DataConfig), build(TrainConfig), _defense_config(), build(RunConfig)


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
    def floats(name):
        try:
            return tuple(float(v) for v in FLAGS[name].value)
        except ValueError:
            raise ValueError(f"--{name} takes comma-separated numbers, got {','.join(FLAGS[name].value)}") from None

    special = {"run_dirs": tuple(FLAGS.run_dir or ()), "attacks": tuple(FLAGS.attacks),
               "pgn_c_l": floats("pgn_c_l"), "pgn_eps": floats("pgn_eps"),
               "autoattack_attacks": tuple(FLAGS.autoattack_attacks), "autoattack_curve": floats("autoattack_curve")}
    preset = EVAL_PRESETS[FLAGS.eval_preset] if FLAGS.eval_preset else {}

    def value(name):  # an explicit flag, else --eval_preset's value, else as for the other modes
        if name in preset and not FLAGS[name].present:
            return preset[name]
        return special[name] if name in special else _value(name)

    return EvalConfig(**{f: value(f) for f in EvalConfig.__dataclass_fields__})


def main(argv):
    stderr_filter.install()  # drops TensorFlow's harmless "remapper failed" line, keeps every other
    if len(argv) > 1:
        _fail(f"unexpected argument {argv[1]!r}: every setting is a --flag (see --help)")
    logging.set_verbosity(logging.ERROR)  # tfds warns about every unprepared folder it probes
    _check_finite_flags()
    if FLAGS.mode == "study":
        return _study()
    if FLAGS.dry_run and FLAGS.mode != "sweep":
        _fail(f"--dry_run lists what a sweep would train: use it with --mode sweep, not --mode {FLAGS.mode}")
    if FLAGS.mode == "eval":
        try:
            _eval_config().validate()  # before loading TensorFlow: bad flags fail instantly
        except ValueError as err:
            _fail(str(err))
    _load_tensorflow()
    {"eval": _evaluate, "train": _train, "sweep": _sweep, "report": _report}[FLAGS.mode]()


def _check_finite_flags() -> None:
    """nan and inf parse as numbers but mean nothing as a setting: refused before any work."""
    for name in _TOOL_FLAGS:
        value = _value(name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            try:
                number = float(v) if isinstance(value, list) else v
            except ValueError:
                continue  # not a number: the flag's own parser reports it
            if isinstance(number, float) and not math.isfinite(number):
                _fail(f"--{name} must be a finite number, got {v}")


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


def _sweep():
    from study.sweep import Sweep, dry_run, run_sweep

    def sweep():
        if FLAGS.run_dir:
            raise ValueError("--mode sweep names its runs itself under --root: drop --run_dir")
        try:
            seeds = tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else (_value("seed"),)
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated integers, got {','.join(FLAGS.seeds)}") from None
        sweep_spec = Sweep.parse(FLAGS.sweep, _value("defense"))
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
        build_report(FLAGS.root, _eval_config(), FLAGS.match_benign, FLAGS.match_tolerance, FLAGS.curve_test_limit,
                     figure2_epochs=FLAGS.figure2_epochs, autoattack_complete=FLAGS.autoattack_complete,
                     prior_reports=FLAGS.prior_report or ())
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)


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
        from study.runner import Options, run_study
        options = Options(FLAGS.engine, FLAGS.ray_address, FLAGS.cpus_per_run, FLAGS.gpus_per_run)
        signal.signal(signal.SIGTERM, _interrupt)
        code = run_study(spec, FLAGS.root, options)
    except (SpecError, EngineError) as err:
        _fail(str(err))
    except ValueError as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    sys.exit(code)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
