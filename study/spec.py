"""A study as a file: the TOML spec that ``run.py --mode study --spec FILE`` runs.

    [study]       name, dataset, preset, seeds, curve_seeds
    [training]    any training setting (DataConfig, TrainConfig, RunConfig, the shared defense ones)
    [[arms]]      defense, settings (fixed), sweep (one setting and its values), table (its Table 2 value)
    [matching]    target, tolerance, stop_at_benign, max_epochs
    [evaluation]  attacks, test_limit, source ({defense, seed, settings}), any EvalConfig setting
    [report]      curve_test_limit, figure2_epochs, autoattack_complete, prior_reports, training_logs

docs/studies.md lists every key with its type and default. Reading a spec checks everything
before anything starts: an unknown key, a value of the wrong type, an arm that names a setting its
defense does not have: one line (``SpecError``) naming the key and the file.

Each arm trains its ``table`` value with every seed and its other values with ``curve_seeds``
(the first seed by default), named as ``--mode sweep`` names runs
(``<defense>[-<variant>][-<name><value>]-seed<seed>``), so a study finds the runs of the sweeps
it replaces.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import data
from configs import PRESETS
from eval.config import ATTACKS, EvalConfig
from study.matching import parse_target
from study.report_config import ReportConfig
from training.config import DefenseConfig, RunConfig, TrainConfig
from training.defenses import NAMES as DEFENSES
from study.sweep import PlannedRun, Sweep, plan

SECTIONS = ("study", "training", "arms", "matching", "evaluation", "report")
# [training]: every field of these, but the ones the study decides per run.
_DECIDED = {"run_dir", "overwrite", "seed", "stop_at_benign", "cache_dir", "dataset"}
_TRAINING_FIELDS = {f.name: f for cfg in (data.DataConfig, TrainConfig, RunConfig)
                    for f in dataclasses.fields(cfg) if f.name not in _DECIDED}
_EVAL_FIELDS = {f.name: f for f in dataclasses.fields(EvalConfig)
                if f.name not in ("run_dirs", "source_run", "eval_dir", "eval_preset", "cache_dir")}
# Defaults as --mode report's (study/report_config.py) and --stop_at_benign's: declared once.
_REPORT_DEFAULTS = {**{k: getattr(ReportConfig, k) for k in ("curve_test_limit", "figure2_epochs",
                                                             "autoattack_complete")},
                    "prior_reports": [], "training_logs": "", "dataset_label": ReportConfig.dataset_label}
_MATCHING_DEFAULTS = {"target": ReportConfig.match_benign, "tolerance": ReportConfig.match_tolerance,
                      "stop_at_benign": RunConfig.stop_at_benign, "max_epochs": 0}


class SpecError(ValueError):
    """A spec that cannot run; the message is one line naming the key and the file."""


@dataclasses.dataclass(frozen=True)
class Arm:
    defense: str
    settings: dict                     # fixed settings of the defense
    sweep: Sweep                       # one swept setting (Sweep(None, (None,)) for none)
    table: object                      # the swept value whose runs get every seed

    @property
    def defense_config(self) -> DefenseConfig:
        return DefenseConfig(self.defense, **self.settings)


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """One run the study trains: where, at which seed and swept value, and its settings."""
    name: str
    arm: Arm | None                    # None: the black-box source
    planned: PlannedRun
    stop_at_benign: float


@dataclasses.dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    dataset: str
    preset: str | None
    seeds: tuple[int, ...]
    curve_seeds: tuple[int, ...]
    training: dict                     # the preset's settings, then [training]'s
    arms: tuple[Arm, ...]
    matching: dict
    evaluation: dict                   # EvalConfig fields
    source: Arm | None
    source_seed: int | None
    report: dict

    def runs(self, root: Path) -> list[TrainingRun]:
        """Every run to train, in the order a study trains them: the Table 2 points seed by seed
        (what a table needs first), the black-box source right after the first run of its defense
        (every table run's evaluation needs it, so with a fixed target the runs are evaluated while
        the others train), then the curves' other values."""
        table, curves = [], []
        for arm in self.arms:
            variant = arm.defense_config.variant()
            for seed in self.seeds:
                early = self.matching["stop_at_benign"] if seed not in self.curve_seeds else 0.0
                planned = plan(root, arm.defense, Sweep(arm.sweep.name, (arm.table,)), (seed,), variant)[0]
                table.append((seed, TrainingRun(planned.run_dir.name, arm, planned, early)))
            others = tuple(v for v in arm.sweep.values if v != arm.table)
            if others:
                for planned in plan(root, arm.defense, Sweep(arm.sweep.name, others), self.curve_seeds, variant):
                    curves.append(TrainingRun(planned.run_dir.name, arm, planned, 0.0))
        ordered = [run for _, run in sorted(table, key=lambda pair: self.seeds.index(pair[0]))]
        if self.source is not None:
            planned = plan(root, self.source.defense, Sweep(None, (None,)), (self.source_seed,),
                           self.source.defense_config.variant())[0]
            alike = [i for i, run in enumerate(ordered) if run.arm.defense == self.source.defense
                     and run.arm.defense_config.variant() == self.source.defense_config.variant()]
            at = alike[0] + 1 if alike else sum(seed == self.seeds[0] for seed, _ in table)
            ordered.insert(at, TrainingRun(planned.run_dir.name, None, planned, 0.0))
        ordered += curves
        names = [r.name for r in ordered]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SpecError(f"{self.path}: two arms train the same run {twice[0]} (the source counts as a clean "
                            f"arm): give it another seed or drop one arm")
        return ordered

    def configs(self, run: TrainingRun) -> dict:
        """The run's settings as plain values, {"data", "train", "defense", "run", "flags"}: what a
        training job takes (``training.loop.train``'s configs; "flags" is config.json's record)."""
        arm = run.arm or self.source
        values = {**self.training, "dataset": self.dataset, "seed": run.planned.seed,
                  "stop_at_benign": run.stop_at_benign, "run_dir": str(run.planned.run_dir)}
        if run.stop_at_benign and self.matching["max_epochs"]:
            values["epochs"] = self.matching["max_epochs"]  # trained on until the target, at most this long
        defense = dict(arm.settings)
        if arm.sweep.name is not None and run.arm is not None:
            (values if arm.sweep.name in _TRAINING_FIELDS else defense)[arm.sweep.name] = run.planned.value

        def build(cls):
            return {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}

        configs = {"data": dataclasses.asdict(data.DataConfig(**build(data.DataConfig))),
                   "train": dataclasses.asdict(TrainConfig(**build(TrainConfig))),
                   "defense": DefenseConfig(arm.defense, **defense).as_dict(),
                   "run": dataclasses.asdict(RunConfig(**build(RunConfig)))}
        flags = {k: v for group in ("data", "train", "defense", "run") for k, v in configs[group].items()}
        configs["flags"] = {**flags, "preset": self.preset, "study": str(self.path)}
        return configs

    def eval_config(self, root: Path) -> EvalConfig:
        source = str(Path(root) / self.source_name()) if self.source is not None else None
        return EvalConfig(run_dirs=(), source_run=source, **self.evaluation)

    def report_config(self) -> ReportConfig:
        """[matching] and [report] as ``--mode report``'s options (one record, whoever reads it)."""
        return ReportConfig(match_benign=self.matching["target"], match_tolerance=self.matching["tolerance"],
                            prior_report=tuple(self.report["prior_reports"]), table_runs=self.table_names(),
                            **{k: self.report[k] for k in ("curve_test_limit", "figure2_epochs", "autoattack_complete",
                                                           "dataset_label")})

    def table_names(self) -> tuple[str, ...]:
        """The runs of Table 2: every arm at its table value, at every seed."""
        return tuple(run.name for run in self.runs(Path(".")) if run.arm is not None and run.planned.value == run.arm.table)

    def source_name(self) -> str | None:
        if self.source is None:
            return None
        return plan(Path("."), self.source.defense, Sweep(None, (None,)), (self.source_seed,),
                    self.source.defense_config.variant())[0].run_dir.name


def load(path: str | Path, dataset: str | None = None) -> Spec:
    """Reads and checks the spec at ``path``; ``dataset`` (--dataset) replaces its dataset."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as err:
        raise SpecError(f"--spec {path} cannot be read ({err.strerror or type(err).__name__})") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path} is not valid TOML: {err}") from None
    where = str(path)
    _known(raw, SECTIONS, where, "")
    study = _table(raw, "study", where)
    _known(study, ("name", "dataset", "preset", "seeds", "curve_seeds"), where, "study.")
    preset = _typed(study, "preset", str, where, "study.", None)
    if preset is not None and preset not in PRESETS:
        raise SpecError(f"{where}: study.preset '{preset}' is not a preset ({', '.join(sorted(PRESETS))})")
    seeds = tuple(_int_list(study, "seeds", where, "study.", [0]))
    curve_seeds = tuple(_int_list(study, "curve_seeds", where, "study.", list(seeds[:1])))
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: study.seeds must list distinct seeds, got {list(seeds)}")
    dataset = dataset or _typed(study, "dataset", str, where, "study.", None)
    if not dataset:
        raise SpecError(f"{where}: no dataset: set study.dataset or give --dataset")

    training = _training(raw, preset, where)
    arms = tuple(_arm(a, f"arms[{i}].", where, training) for i, a in enumerate(_arms(raw, where)))
    matching = _matching(raw, where, seeds, curve_seeds, training.get("epochs", TrainConfig.epochs))
    evaluation, source, source_seed = _evaluation(raw, where, training)
    report = _section(raw, "report", _REPORT_DEFAULTS, where)
    for name in ("curve_test_limit", "figure2_epochs", "autoattack_complete"):
        if report[name] < (1 if name == "figure2_epochs" else 0):
            raise SpecError(f"{where}: report.{name} must be >= {1 if name == 'figure2_epochs' else 0}")
    if not all(isinstance(p, str) for p in report["prior_reports"]):
        raise SpecError(f"{where}: report.prior_reports takes a list of paths (strings)")
    name = _typed(study, "name", str, where, "study.", path.stem)
    spec = Spec(path, name, dataset, preset, seeds, curve_seeds, training, arms, matching, evaluation, source,
                source_seed, report)
    from study.checks import check_runs  # the runs it plans, as training would check them
    check_runs(spec)
    return spec


def _training(raw: dict, preset: str | None, where: str) -> dict:
    values = dict(PRESETS[preset]) if preset else {}
    section = _table(raw, "training", where)
    shared = {f.name: f for f in dataclasses.fields(DefenseConfig) if f.name not in ("defense", "own")}
    for key, value in section.items():
        field = _TRAINING_FIELDS.get(key) or shared.get(key)
        if field is None:
            raise SpecError(f"{where}: unknown key training.{key} (the run's settings: "
                            f"{', '.join(sorted(set(_TRAINING_FIELDS) | set(shared)))}; the seed is study.seeds, "
                            f"stop_at_benign is matching's)")
        values[key] = _checked(value, _kind(field), where, f"training.{key}")
    return values


def _arm(raw: dict, key: str, where: str, training: dict) -> Arm:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: {key.rstrip('.')} must be a table ([[arms]])")
    _known(raw, ("defense", "settings", "sweep", "table"), where, key)
    defense = _typed(raw, "defense", str, where, key, None)
    if defense not in DEFENSES:
        raise SpecError(f"{where}: {key}defense must be one of {', '.join(DEFENSES)}, got {defense!r}")
    names = DefenseConfig.setting_names(defense)
    settings = {n: training[n] for n in names if n in training}  # the shared ones set study-wide
    fixed = raw.get("settings", {})
    if not isinstance(fixed, dict):
        raise SpecError(f"{where}: {key}settings must be a table of {defense}'s settings")
    for name, value in fixed.items():
        if name not in names:
            raise SpecError(f"{where}: {key}settings.{name} is not a setting of defense {defense} (its settings: "
                            f"{', '.join(names)})")
        settings[name] = _checked(value, DefenseConfig.setting_field(defense, name).metadata["kind"], where,
                                  f"{key}settings.{name}")
    swept = raw.get("sweep", {})
    if not isinstance(swept, dict) or len(swept) > 1:
        raise SpecError(f"{where}: {key}sweep takes one setting and its values, e.g. sweep = {{eps = [0.25, 0.5]}}")
    sweep = Sweep(None, (None,))
    for name, values in swept.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: {key}sweep.{name} takes a list of values")
        try:
            sweep = Sweep.parse(f"{name}=" + ",".join(map(_text, values)), defense)
        except ValueError as err:
            raise SpecError(f"{where}: {key}sweep.{name}: {str(err).replace('--sweep ', '')}") from None
        if name in fixed:
            raise SpecError(f"{where}: {key}sweep.{name} is also fixed in {key}settings: choose one")
    table = raw.get("table", sweep.values[0] if len(sweep.values) == 1 else None)
    if sweep.name is not None and table not in sweep.values:
        raise SpecError(f"{where}: {key}table must be one of {key}sweep.{sweep.name}'s values "
                        f"({', '.join(map(_text, sweep.values))}): the value Table 2 compares at, trained with "
                        f"every seed")
    table = next((v for v in sweep.values if v == table), table)  # as the sweep's type: 1 -> 1.0 for c_l
    if sweep.name is None and "table" in raw:
        raise SpecError(f"{where}: {key}table names a swept value, and {key} sweeps nothing")
    try:
        DefenseConfig(defense, **settings).validate()
    except ValueError as err:
        raise SpecError(f"{where}: {key}settings: {str(err).replace('--', '')}") from None
    return Arm(defense, settings, sweep, table)


def _matching(raw: dict, where: str, seeds, curve_seeds, epochs: int) -> dict:
    section = _section(raw, "matching", _MATCHING_DEFAULTS, where, kinds={"target": (str, float)})
    target = section["target"]
    try:
        parsed = parse_target(_text(target))
    except ValueError as err:
        raise SpecError(f"{where}: matching.target: {str(err).replace('--match_benign ', '')}") from None
    if not 0.0 <= section["stop_at_benign"] <= 1.0 or section["tolerance"] < 0:
        raise SpecError(f"{where}: matching.stop_at_benign must be in [0, 1] and matching.tolerance >= 0")
    if section["stop_at_benign"] and not isinstance(parsed, float):
        raise SpecError(f"{where}: matching.stop_at_benign stops the table seeds at a benign accuracy: give "
                        f"matching.target as that number, not {target!r}")
    if not set(curve_seeds) <= set(seeds):
        raise SpecError(f"{where}: study.curve_seeds must be among study.seeds")
    if section["max_epochs"] and not section["stop_at_benign"]:
        raise SpecError(f"{where}: matching.max_epochs lengthens the runs that stop at matching.stop_at_benign: "
                        f"set stop_at_benign too, or drop max_epochs (training.epochs sets every run's length)")
    if section["max_epochs"] and section["max_epochs"] < epochs:
        raise SpecError(f"{where}: matching.max_epochs ({section['max_epochs']}) is below training.epochs "
                        f"({epochs}): the runs that stop at the target may train longer than the others, not less")
    return {**section, "target": _text(target)}


def _evaluation(raw: dict, where: str, training: dict):
    section = dict(_table(raw, "evaluation", where))
    source_raw = section.pop("source", None)
    values = {}
    for key, value in section.items():
        field = _EVAL_FIELDS.get(key)
        if field is None:
            raise SpecError(f"{where}: unknown key evaluation.{key} (the evaluation's settings: source, "
                            f"{', '.join(sorted(_EVAL_FIELDS))})")
        if isinstance(field.default, tuple):
            if not isinstance(value, list):
                raise SpecError(f"{where}: evaluation.{key} takes a list")
            value = tuple(value)
        elif field.name == "autoattack_eps":
            value = _checked(value, float, where, f"evaluation.{key}")
        else:
            value = _checked(value, _kind(field), where, f"evaluation.{key}")
        values[key] = value
    unknown = [a for a in values.get("attacks", ()) if a not in ATTACKS]
    if unknown:
        raise SpecError(f"{where}: evaluation.attacks: unknown attack {unknown[0]!r} (choose from "
                        f"{', '.join(ATTACKS)})")
    try:
        EvalConfig(run_dirs=("-",), **values).validate()
    except ValueError as err:
        raise SpecError(f"{where}: evaluation: {str(err).replace('--', '')}") from None
    if source_raw is None:
        return values, None, None
    if not isinstance(source_raw, dict):
        raise SpecError(f"{where}: evaluation.source takes a table: {{defense = \"none\", seed = 3}}")
    _known(source_raw, ("defense", "seed", "settings"), where, "evaluation.source.")
    seed = _typed(source_raw, "seed", int, where, "evaluation.source.", None)
    if seed is None:
        raise SpecError(f"{where}: evaluation.source.seed is needed: the black-box source is an independent run")
    arm = _arm({k: v for k, v in source_raw.items() if k != "seed"}, "evaluation.source.", where, training)
    return values, arm, seed


# --- small checks ---------------------------------------------------------------------------------

def _known(raw: dict, keys, where: str, prefix: str) -> None:
    for key in raw:
        if key not in keys:
            raise SpecError(f"{where}: unknown key {prefix}{key} (known: {', '.join(keys)})")


def _table(raw: dict, name: str, where: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {name} must be a table ([{name}])")
    return value


def _arms(raw: dict, where: str) -> list:
    arms = raw.get("arms")
    if not isinstance(arms, list) or not arms:
        raise SpecError(f"{where}: no arms: add at least one [[arms]] with a defense")
    return arms


def _section(raw: dict, name: str, defaults: dict, where: str, kinds: dict | None = None) -> dict:
    section = _table(raw, name, where)
    _known(section, tuple(defaults), where, f"{name}.")
    out = dict(defaults)
    for key, value in section.items():
        kind = (kinds or {}).get(key) or type(defaults[key])
        out[key] = _checked(value, kind, where, f"{name}.{key}")
    return out


def _typed(raw: dict, key: str, kind, where: str, prefix: str, default):
    return _checked(raw[key], kind, where, prefix + key) if key in raw else default


def _int_list(raw: dict, key: str, where: str, prefix: str, default: list) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SpecError(f"{where}: {prefix}{key} takes a list of integers, got {value!r}")
    return value


def _kind(field: dataclasses.Field):
    if "kind" in field.metadata:
        return field.metadata["kind"]
    default = field.default
    return type(default) if default is not None and default is not dataclasses.MISSING else str


def _checked(value, kind, where: str, key: str):
    """``value`` as ``kind`` (an int is a fine float); anything else is a SpecError naming ``key``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise SpecError(f"{where}: {key} takes {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        raise SpecError(f"{where}: {key} takes {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
