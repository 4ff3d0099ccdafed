"""The PGN paper's published numbers, as data: what the report's claims compare a study's own
numbers with (docs/methods.md section 2; the paper's hardware: one RTX 2080 Ti)."""

# The paper's CIFAR-10 Table 3 (this reproduction's dataset) and CIFAR-100 Table 2, from docs/methods.md section 2.
PAPER_TABLE3 = {  # FGM acc, MIM acc, DeepFool mean L2, CW mean L2, benign, s/epoch
    "none": dict(fgm_acc=0.293, mim_acc=0.094, deepfool_mean=0.213, cw_mean=0.174, benign=0.919, seconds_per_epoch=8.3),
    "fgm": dict(fgm_acc=0.634, mim_acc=0.554, deepfool_mean=0.514, cw_mean=0.420, benign=0.918, seconds_per_epoch=25.1),
    "pgd": dict(fgm_acc=0.626, mim_acc=0.543, deepfool_mean=0.498, cw_mean=0.409, benign=0.917, seconds_per_epoch=175.3),
    "pgn": dict(fgm_acc=0.653, mim_acc=0.596, deepfool_mean=0.510, cw_mean=0.437, benign=0.919, seconds_per_epoch=52.2),
}
PAPER_TABLE2_CW = {"none": 0.079, "fgm": 0.133, "pgd": 0.131, "pgn": 0.262}  # CIFAR-100 CW mean L2
