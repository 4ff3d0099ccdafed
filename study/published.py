"""The PGN paper's published numbers, as data: what the report's claims compare a study's own
numbers with (docs/methods.md section 2; the paper's hardware: one RTX 2080 Ti).

Its main text measures on CIFAR-100 (Table 2, FGM-AT and PGD-AT at eps 0.02, PGN at c_L 50); its
appendix on CIFAR-10 (Table 3, eps 0.1). A report compares with the table of the dataset it
measured on: Table 2 for a 100-class dataset, Table 3 otherwise (``paper_for``).
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# FGM and MIM accuracy (white-box, then black-box: crafted on an independently trained network),
# DeepFool and CW-L2 mean L2 (rho) and CW median L2, benign accuracy, seconds per epoch.
PAPER_TABLE3 = {
    "none": dict(fgm_acc=0.2934, mim_acc=0.0939, fgm_black=0.4979, mim_black=0.3633, deepfool_mean=0.2129,
                 cw_mean=0.1742, cw_median=0.1596, benign=0.9189, seconds_per_epoch=8.28),
    "fgm": dict(fgm_acc=0.6335, mim_acc=0.5543, fgm_black=0.8428, mim_black=0.851, deepfool_mean=0.5135,
                cw_mean=0.4196, cw_median=0.3919, benign=0.918, seconds_per_epoch=25.14),
    "pgd": dict(fgm_acc=0.6259, mim_acc=0.5426, fgm_black=0.8369, mim_black=0.8468, deepfool_mean=0.4977,
                cw_mean=0.4091, cw_median=0.382, benign=0.9172, seconds_per_epoch=175.25),
    "pgn": dict(fgm_acc=0.6534, mim_acc=0.5958, fgm_black=0.8501, mim_black=0.8568, deepfool_mean=0.5102,
                cw_mean=0.4365, cw_median=0.4062, benign=0.9186, seconds_per_epoch=52.19),
}
PAPER_TABLE2 = {
    "none": dict(fgm_acc=0.1173, mim_acc=0.0167, fgm_black=0.3843, mim_black=0.2913, deepfool_mean=0.0994,
                 cw_mean=0.0791, cw_median=0.0503, benign=0.7002, seconds_per_epoch=8.18),
    "fgm": dict(fgm_acc=0.2213, mim_acc=0.1068, fgm_black=0.5211, mim_black=0.5115, deepfool_mean=0.1669,
                cw_mean=0.1334, cw_median=0.0867, benign=0.6993, seconds_per_epoch=25.12),
    "pgd": dict(fgm_acc=0.2139, mim_acc=0.1000, fgm_black=0.5164, mim_black=0.5014, deepfool_mean=0.1625,
                cw_mean=0.1305, cw_median=0.0851, benign=0.7000, seconds_per_epoch=175.86),
    "pgn": dict(fgm_acc=0.3906, mim_acc=0.3444, fgm_black=0.6428, mim_black=0.6456, deepfool_mean=0.3184,
                cw_mean=0.2617, cw_median=0.1674, benign=0.7004, seconds_per_epoch=51.77),
}


class PaperTable:
    """One of the paper's tables: its dataset, its name, its rows (by defense), its eps, and the
    figure with that dataset's robustness curves."""

    def __init__(self, dataset: str, table: str, rows: dict, eps: float, curve_figure: str):
        self.dataset, self.table, self.rows, self.eps, self.curve_figure = dataset, table, rows, eps, curve_figure

    @property
    def name(self) -> str:  # "CIFAR-100 Table 2"
        return f"{self.dataset} {self.table}"

    def value(self, defense: str, key: str) -> float:
        return self.rows[defense][key]

    def values(self, key: str, defenses=("pgn", "fgm", "pgd")) -> str:
        """"PGN 0.262, FGM-AT 0.133, PGD-AT 0.131": the defenses' numbers in one column."""
        return ", ".join(f"{TITLES[d]} {rounded(self.rows[d][key])}" for d in defenses)


def rounded(value: float, places: int = 3) -> str:
    """The paper's decimal number to ``places`` places as a person rounds it (0.4365 -> 0.437)."""
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


TITLES = {"none": "clean", "fgm": "FGM-AT", "pgd": "PGD-AT", "pgn": "PGN"}
PAPER = {"cifar10": PaperTable("CIFAR-10", "Table 3", PAPER_TABLE3, 0.1, "Figure 7"),
         "cifar100": PaperTable("CIFAR-100", "Table 2", PAPER_TABLE2, 0.02, "Figure 5")}


def paper_for(num_classes: int | None) -> str:
    """The paper's table to compare a dataset with: CIFAR-100's for 100 classes, else CIFAR-10's."""
    return "cifar100" if num_classes == 100 else "cifar10"
