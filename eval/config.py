"""The evaluation protocol's settings; defaults are the paper's (Table 1, section 4.2) and the
CleverHans v3 defaults its reference code used (methods.md section 2)."""
from __future__ import annotations

import dataclasses

# White-box attacks and the minimum-norm ones; "pgn" is the generator-as-attack study (Figure 3).
ATTACKS = ("fgm", "mim", "deepfool", "cw", "pgn")
DEFAULT_ATTACKS = ("fgm", "mim", "deepfool", "cw")
MIN_NORM_ATTACKS = ("deepfool", "cw")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    run_dirs: tuple[str, ...]
    source_run: str | None = None       # black-box: attacks crafted on this run, transferred
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    test_limit: int = 0                 # class-balanced test subset; 0 = the whole test split
    eval_dir: str | None = None         # default: <first run>/eval
    cache_dir: str | None = None        # the decoded-image cache's folder (data.DataConfig); None: its default
    batch_size: int = 128
    fgm_eps: float = 0.5                # Table 1 "FGS attack eps" (L2)
    mim_eps: float = 0.5                # Table 1 "MIM attack eps" (L2)
    mim_iters: int = 100                # Table 1 "MIM attack iter"
    mim_eps_iter: float = 0.06          # CleverHans's default step
    deepfool_iters: int = 100           # Table 1 "DF attack iter"
    deepfool_overshoot: float = 0.02
    deepfool_candidates: int = 10
    cw_iters: int = 100                 # Table 1 "CW attack iter"
    cw_binary_steps: int = 5
    cw_lr: float = 5e-3
    cw_initial_const: float = 1e-2
    masking_eps: float = 5.0            # PGD with this L2 budget must bring accuracy near 0
    masking_iters: int = 20
    pgn_c_l: tuple[float, ...] = (1.0, 5.0, 20.0, 50.0)
    pgn_epochs: int = 2
    pgn_train_limit: int = 10000
    pgn_eps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)

    def validate(self) -> None:
        if not self.run_dirs:
            raise ValueError("--mode eval needs at least one --run_dir")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown or not self.attacks:
            raise ValueError(f"unknown attack '{','.join(unknown) or '(none)'}' in --attacks: choose from "
                             f"{','.join(ATTACKS)}")
        for name in ("fgm_eps", "mim_eps", "mim_eps_iter", "masking_eps", "deepfool_overshoot",
                     "cw_lr", "cw_initial_const"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "mim_iters", "deepfool_iters", "cw_iters", "cw_binary_steps",
                     "masking_iters", "pgn_epochs", "deepfool_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.test_limit < 0:
            raise ValueError(f"--test_limit must be >= 0, got {self.test_limit}")
        if any(c < 0 for c in self.pgn_c_l) or any(e < 0 for e in self.pgn_eps):
            raise ValueError("--pgn_c_l and --pgn_eps values must be >= 0")

    def attack_settings(self, attack: str) -> dict:
        """The settings that determine an attack's result (its cache key, and the report's record)."""
        prefix = {"fgm": "fgm_", "mim": "mim_", "deepfool": "deepfool_", "cw": "cw_", "pgn": "pgn_",
                  "masking": "masking_"}[attack]
        return {k: v for k, v in dataclasses.asdict(self).items() if k.startswith(prefix)}
