"""The report's options (``run.py --mode report``): a config of their own, each field a --flag
(run.py generates them, as it does every config's), checked before any data loads."""
from __future__ import annotations

import dataclasses

from configs.settings import check_settings, setting
from study.matching import parse_target


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    match_benign: str = setting("lowest", "report: benign accuracy at which defenses are compared: a number, clean "
                                "(the clean runs' accuracy), lowest (the least accurate table run's final accuracy) "
                                "or none (final weights).")
    curve_test_limit: int = setting(0, "report: CW-L2 for the curves on a fixed random subset of this many test "
                                    "images (0: all of --test_limit's).", at_least=0)
    figure2_epochs: int = setting(6, "report: Figure 2's FGM-AT run over its epochs on at most this many kept epochs, "
                                  "evenly spaced, the last included (each costs a CW-L2 run).", at_least=1)
    autoattack_complete: int = setting(0, "report with --autoattack_version custom --autoattack_attacks "
                                       "apgd-ce,apgd-t: run the standard version's other attacks (FAB-T, Square) on "
                                       "a fixed random subset of this many test images of every table run (0: none), "
                                       "for the standard AutoAttack's robust accuracy there.", at_least=0)
    match_tolerance: float = setting(0.01, "report: a matched checkpoint further than this from the target is "
                                     "reported as unmatched.", at_least=0.0)
    prior_report: tuple[str, ...] = setting((), "report: an earlier report's report.json (same evaluation "
                                            "protocol) whose numbers stand in for runs under --root that hold their "
                                            "training log but no weights.", of=str, repeated=True)
    dataset_label: str = setting("", "report: the dataset's name in the report's title and protocol, e.g. "
                                 "'CIFAR-100 (npz copy)' (empty: the --dataset value).")
    table_runs: tuple[str, ...] = setting((), "report: the runs that are Table 2's, by name (a study spec names its "
                                          "arms' table values and seeds; empty: each defense's value with the most "
                                          "seeds).", of=str, repeated=True)

    def validate(self) -> None:
        """Raises ValueError (one line, naming the flag) for an option out of its bounds."""
        check_settings(self)
        parse_target(self.match_benign)
