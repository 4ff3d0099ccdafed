"""Evaluations a report takes from an earlier report, for runs whose weights are gone.

A run directory that holds only its training log (``config.json`` and ``metrics.jsonl``, as
committed beside a report) can still be matched, grouped and costed, but not attacked. Reports
named by ``--prior_report`` were made earlier with the same evaluation protocol; for such a run
their Table 2 row, Figure 5 point and Figure 2 epochs stand in for the attacks, after checking
that today's matching picks the epoch they evaluated. A study whose runs outlive no machine (each
session trains and evaluates what it can, and commits its logs and report) grows this way.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from training.config import keeps_epoch
from training.rundir import EMA_WEIGHTS_FILE, RunDirError

# What must be the same for an earlier report's numbers to sit in one table with today's.
SAME_PROTOCOL = ("dataset", "test_images", "target", "tolerance", "attack_settings", "curve_test_images",
                 "autoattack_complete")


@dataclasses.dataclass
class Prior:
    path: Path
    report: dict
    used: set = dataclasses.field(default_factory=set)  # the runs this report's numbers stood in for

    @property
    def commit(self) -> str:
        return str((self.report["protocol"].get("report_git") or {}).get("commit"))[:10]

    def record(self) -> dict:
        return {"path": str(self.path), "commit": self.commit, "runs": sorted(self.used)}


def black_box_source(row: dict, protocol: dict) -> str | None:
    """The name of the run a Table 2 row's black-box attacks were crafted on, or None where the row
    has none (reports made before rows recorded it: their protocol's --source_run)."""
    if not has_black_box(row):
        return None
    return row.get("black_box_source") or (Path(protocol["source_run"]).name if protocol.get("source_run") else None)


def source_trainings(rows: list[dict], protocol: dict) -> dict[str, dict]:
    """For each black-box source whose rows record more than one set of its weights (trained again
    on a new machine), the runs crafted on each: {name: {weights, or None where a row predates the
    record: {"created": when that training began, "runs": [...]}}}."""
    by_name: dict[str, dict] = {}
    for row in rows:
        if (name := black_box_source(row, protocol)) is not None:
            weights = row.get("black_box_source_weights")
            training = by_name.setdefault(name, {}).setdefault(
                weights, {"created": row.get("black_box_source_created") if weights else None, "runs": []})
            training["runs"].append(row["run"])
    return {name: trainings for name, trainings in by_name.items() if len(trainings) > 1}


def has_black_box(row: dict) -> bool:
    return any("black" in attack for attack in row["attacks"].values())


def has_weights(run_dir: Path) -> bool:
    return (Path(run_dir) / EMA_WEIGHTS_FILE).exists()


def kept_epochs_when_trained(config: dict, accuracies: dict, event: dict) -> list[int]:
    """The epochs a weightless run kept when it trained (its recorded --keep_checkpoints, every
    epoch if it recorded none; the epoch it finished early at, too), so that it is matched among the
    epochs its report could match (table_row checks that it was)."""
    epochs = int(config["settings"]["train.epochs"])
    policy = str((config.get("flags") or {}).get("keep_checkpoints") or "all")
    last = event.get("epoch") if event.get("early") else None
    return sorted(e for e in accuracies if e == last or keeps_epoch(policy, e, epochs))


def load_priors(paths, protocol: dict) -> list[Prior]:
    """The reports at ``paths``, each checked to share ``protocol``'s SAME_PROTOCOL entries."""
    priors = []
    for path in map(Path, paths or ()):
        try:
            report = json.loads(path.read_text())
            previous = report["protocol"]
            report["table"], report["curve_points"]  # noqa: B018 (a report.json has both)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunDirError(f"--prior_report {path} is not a report's report.json ({type(err).__name__}): give "
                              f"the report.json an earlier --mode report wrote") from None
        for key in SAME_PROTOCOL:
            now, then = _plain(protocol.get(key)), _plain(previous.get(key))
            if now != then:
                raise RunDirError(f"--prior_report {path} was made with another {key} ({_short(then)}; this report: "
                                  f"{_short(now)}): its numbers cannot share a table with these; make this report "
                                  f"with its settings")
        priors.append(Prior(path, report))
    return priors


def table_row(priors: list[Prior], run_dir: Path, epoch: int | None) -> dict:
    """The Table 2 row an earlier report has for the weightless run at ``run_dir``, evaluated at
    the ``epoch`` today's matching picks (None: its final weights)."""
    name = Path(run_dir).name
    for prior in priors:
        for entry in prior.report["table"].values():
            for row in entry["rows"]:
                if row["run"] != name:
                    continue
                if row.get("epoch") != epoch:
                    raise RunDirError(f"--prior_report {prior.path} evaluated {name} at epoch {row.get('epoch')}, but "
                                      f"this report's matching picks epoch {epoch}, and the run's weights are gone: "
                                      f"make the report with that report's --match_benign and --match_tolerance")
                prior.used.add(name)
                source = black_box_source(row, prior.report["protocol"])
                return {**row, "evaluated_by": row.get("evaluated_by") or str(prior.path),  # the first report's
                        **({"black_box_source": source} if source else {})}
    raise _missing(run_dir, priors, "Table 2")


def curve_point(priors: list[Prior], run_dir: Path) -> dict:
    """An earlier report's Figure 5 point (CW-L2 on the final weights) of a weightless run."""
    name = Path(run_dir).name
    for prior in priors:
        for point in prior.report["curve_points"]:
            if point["run"] == name:
                prior.used.add(name)
                return point
    raise _missing(run_dir, priors, "Figure 5")


def over_epochs(priors: list[Prior], run_dir: Path, epochs: list[int]) -> list[dict]:
    """An earlier report's Figure 2 points (CW-L2 per epoch) of a weightless run, at ``epochs``."""
    name = Path(run_dir).name
    for prior in priors:
        figure = prior.report.get("fgm_over_epochs") or {}
        if figure.get("run") != name:
            continue
        points = figure.get("points") or []
        if [p["epoch"] for p in points] != list(epochs):
            raise RunDirError(f"--prior_report {prior.path} drew Figure 2 for {name} at epochs "
                              f"{[p['epoch'] for p in points]}, this report asks for {list(epochs)} and the run's "
                              f"weights are gone: give the --figure2_epochs that report used")
        prior.used.add(name)
        return points
    raise _missing(run_dir, priors, "Figure 2")


def _missing(run_dir: Path, priors: list[Prior], what: str) -> RunDirError:
    where = ", ".join(str(p.path) for p in priors) or "no --prior_report given"
    return RunDirError(f"{run_dir} has no weights ({EMA_WEIGHTS_FILE}) and no earlier report evaluated it for "
                       f"{what} ({where}): pass the --prior_report that did, train it again, or move it out of --root")


def _plain(value):
    return json.loads(json.dumps(value))


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
