"""What a report compares, decided once: the finished runs under a root, grouped by defense and
variant, each group's table point, the benign accuracy to match and each table run's matched
epoch, and Figure 2's run and epochs.

``make_plan`` is the one place these are computed: the study's driver makes the evaluation jobs
from it (``study.evaluations.jobs_for``), and the report lays out what those jobs produced by it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from eval.runs import TrainedRun, load_run
from study import report_prior
from study.matching import Match, epoch_accuracies, kept_epochs, match_table, parse_target, resolve_target
from study.report_tables import DEFENSE_TITLES, group_title
from training.rundir import CONFIG_FILE, RunDirError, default_settings, finished_event, read_config

# Settings that differ between runs of one sweep without being what it swept.
_NOT_SWEPT = ("train.seed", "train.epochs")


@dataclasses.dataclass
class StudyRun:
    run: TrainedRun
    swept: str | None          # the setting the defense's sweep varied ("defense.eps", ...)
    accuracies: dict           # epoch -> benign accuracy recorded in training
    kept: list
    group: str = ""            # the defense and its variant: "pgn", "pgn[pgn_grad_scale=unit]" (group())
    finished_early: bool = False  # --stop_at_benign: Table 2 only, no curve point
    has_weights: bool = True   # False: its training log alone; an earlier report's numbers stand in (report_prior)

    @property
    def defense(self) -> str:
        return self.run.defense

    @property
    def seed(self) -> int:
        return int(self.run.settings["train.seed"])

    @property
    def value(self):
        return self.run.settings[self.swept] if self.swept else None

    @property
    def label(self) -> str:
        title = group_title(self.group or self.defense)
        return title if self.swept is None else f"{title} {self.swept.split('.')[-1]}={self.value:g}"

    @property
    def final_accuracy(self) -> float:
        return self.accuracies[max(self.accuracies)]


@dataclasses.dataclass
class Plan:
    runs: list[StudyRun]                 # the finished runs, the black-box source aside
    unfinished: list[Path]
    source: TrainedRun | None
    groups: dict[str, list[StudyRun]]
    table_runs: dict[str, list[StudyRun]]  # each group's table point
    early: list[str]                     # runs finished early (--stop_at_benign)
    target_spec: float | str | None      # --match_benign as parsed
    target: float | None                 # the benign accuracy matched
    matches: dict[str, Match]            # table run name -> its matched epoch
    figure2: StudyRun | None             # Figure 2's FGM-AT run (the first seed's)
    figure2_epochs: list[int]

    def table_epoch(self, member: StudyRun) -> int | None:
        """The weights a table run's row attacks: its matched kept epoch; None (the final weights)
        for a run that kept no epochs (--keep_checkpoints last)."""
        return self.matches[member.run.name].epoch if member.kept else None

    def curve_runs(self) -> list[StudyRun]:
        return [m for members in self.groups.values() for m in members if not m.finished_early]


def make_plan(root: str, source_run: str | None, match_benign: str, tolerance: float,
              figure2_epochs: int, found: tuple | None = None, table_names: tuple[str, ...] = ()) -> Plan:
    """``found``: ``discover(root)``'s answer when the caller has it. ``table_names``: the runs a
    study spec names as Table 2's (its arms' table values and seeds), so that a plan made while
    some are still training picks the same ones; empty: each group's value with the most seeds."""
    target_spec = parse_target(match_benign)
    runs, unfinished = found or discover(Path(root))
    source = load_run(source_run) if source_run else None
    if source is not None:  # the black-box source is an independent run, not one of the table's
        runs = [r for r in runs if r.run.run_dir.resolve() != source.run_dir.resolve()]
        if not runs:
            raise RunDirError(f"--root {root} holds no finished run besides --source_run {source_run}")
    groups = group(runs)
    if table_names:  # a group none of whose named runs finished yet has no table point so far
        named = {d: [m for m in rs if m.run.name in table_names] for d, rs in groups.items()}
        table_runs = {d: rs for d, rs in named.items() if rs}
    else:
        table_runs = {d: table_point(rs) for d, rs in groups.items()}
    early = [r.run.name for r in runs if r.finished_early]
    if early and not isinstance(target_spec, float):
        raise RunDirError(f"--match_benign {match_benign} compares final accuracies, but {', '.join(early[:3])} "
                          f"finished early (--stop_at_benign): give the benign accuracy to match as a number")
    finals = {d: [m.final_accuracy for m in members] for d, members in table_runs.items()}
    target = resolve_target(target_spec, finals)
    matches = match_table(table_runs, target, tolerance)
    fgm = [r for r in table_runs.get("fgm", []) if not r.finished_early]
    figure2 = min(fgm, key=lambda r: r.seed) if fgm else None
    return Plan(runs, unfinished, source, groups, table_runs, early, target_spec, target, matches, figure2,
                spaced(figure2.kept, figure2_epochs) if figure2 else [])


def spaced(epochs: list[int], most: int) -> list[int]:
    """At most ``most`` of ``epochs`` (sorted), evenly spaced, the first and the last included."""
    if len(epochs) <= most:
        return list(epochs)
    if most == 1:
        return [epochs[-1]]
    return sorted({epochs[round(i * (len(epochs) - 1) / (most - 1))] for i in range(most)})


def discover(root: Path) -> tuple[list[StudyRun], list[Path]]:
    """The finished runs directly under ``root`` (sorted by name) and the unfinished ones."""
    if not root.is_dir():
        raise RunDirError(f"--root {root} is not a directory: give the --root of a --mode sweep")
    finished, unfinished = [], []
    for run_dir in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).exists()):
        config = read_config(run_dir / CONFIG_FILE, "move it out of --root, or train it again with --overwrite")
        event = finished_event(run_dir, config["settings"]["train.epochs"])
        if event is None:
            unfinished.append(run_dir)
            continue
        weights = report_prior.has_weights(run_dir)
        run = load_run(run_dir) if weights else TrainedRun(run_dir, config)
        accuracies = epoch_accuracies(run_dir)
        kept = kept_epochs(run_dir) if weights else report_prior.kept_epochs_when_trained(config, accuracies, event)
        # A run trained to stop at the target is a Table 2 run only, also when it reached it in its
        # last epoch or never (a study's matching.max_epochs): its length is not the curve's.
        early = bool(event.get("early") or event.get("stop_at_benign"))
        finished.append(StudyRun(run, None, accuracies, kept, finished_early=early, has_weights=weights))
    if not finished:
        raise RunDirError(f"--root {root} holds no finished run: train with --mode sweep --root {root} first")
    datasets = {r.run.config["dataset"]["name"] for r in finished}
    if len(datasets) > 1:
        raise RunDirError(f"--root {root} mixes datasets ({', '.join(sorted(datasets))}): one report per dataset")
    return finished, unfinished


def recorded_subsets(runs: list[StudyRun]) -> dict[str, list[str]]:
    """{the test subset on which training recorded benign accuracy, in words: the runs on it}.

    Matching and Figure 5 use those recorded accuracies, not the report's own test images; runs
    recorded on different subsets (another --test_limit at training) are not comparable."""
    subsets: dict[str, list[str]] = {}
    for member in runs:
        limit = int(member.run.settings.get("data.test_limit") or 0)
        size = member.run.config["dataset"].get("test_size")
        what = f"{size} test images (training's --test_limit {limit})" if limit else \
            f"the whole test split ({size} images)"
        subsets.setdefault(what, []).append(member.run.name)
    return subsets


def group(runs: list[StudyRun]) -> dict[str, list[StudyRun]]:
    """Runs by defense and variant (clean first), each marked with the setting its sweep varied.

    Within a defense, a setting that takes text or boolean values and differs between its runs is
    a *variant* (another algorithm: ``--pgn_grad_scale unit``, ``--l2l_attacker slim``): its runs
    are a group, and a curve, of their own, keyed ``pgn[pgn_grad_scale=unit]`` by the values away
    from the defaults (the defaults' group keeps the plain ``pgn``). A number that differs is what
    the group's sweep varied, its curve's axis: at most one per group."""
    order = list(DEFENSE_TITLES)
    by_defense: dict[str, list[StudyRun]] = {}
    for member in sorted(runs, key=lambda r: (order.index(r.defense) if r.defense in order else 99, r.run.name)):
        by_defense.setdefault(member.defense, []).append(member)
    groups: dict[str, list[StudyRun]] = {}
    for defense, members in by_defense.items():
        differing = _differing(members)
        categorical = [k for k in differing if all(isinstance(m.run.settings.get(k), (str, bool, type(None)))
                                                  for m in members)]
        defaults = default_settings(defense)
        for member in members:
            away = {k: member.run.settings.get(k) for k in categorical if member.run.settings.get(k) != defaults.get(k)}
            shown = ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(away.items()))
            key = f"{defense}[{shown}]" if away else defense
            groups.setdefault(key, []).append(member)
    for key, members in groups.items():
        keys = _differing(members)
        if len(keys) > 1:
            raise RunDirError(f"the {key} runs differ in more than one setting ({', '.join(keys)}): "
                              f"a report compares one sweep per defense and variant; put other sweeps under another "
                              f"--root")
        for member in members:
            member.group = key
            member.swept = keys[0] if keys else None
    return groups


def _differing(members: list[StudyRun]) -> list[str]:
    """The settings in which the runs differ, but for the seed and the epoch count."""
    return sorted({k for m in members for k in m.run.settings if k not in _NOT_SWEPT
                   and len({json.dumps(x.run.settings.get(k)) for x in members}) > 1})


def table_point(members: list[StudyRun]) -> list[StudyRun]:
    """The runs at the defense's value with the most seeds (ties: the middle value of the sweep)."""
    by_value: dict = {}
    for member in members:
        by_value.setdefault(json.dumps(member.value), []).append(member)
    values = sorted(by_value, key=lambda v: json.loads(v) if json.loads(v) is not None else 0)
    most = max(len(v) for v in by_value.values())
    tied = [v for v in values if len(by_value[v]) == most]
    return by_value[tied[len(tied) // 2]]
