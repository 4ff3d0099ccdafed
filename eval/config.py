"""The evaluation protocol's settings; defaults are the paper's (Table 1, section 4.2) and the
CleverHans v3 defaults its reference code used (docs/methods.md section 2)."""
from __future__ import annotations

import dataclasses

# White-box attacks and the minimum-norm ones; "pgn" is the generator-as-attack study (Figure 3);
# "autoattack" is Croce & Hein's standard evaluation (attacks/autoattack.py), beyond the paper.
ATTACKS = ("fgm", "mim", "pgd", "deepfool", "cw", "autoattack", "pgn")
DEFAULT_ATTACKS = ("fgm", "mim", "deepfool", "cw")
MIN_NORM_ATTACKS = ("deepfool", "cw")
# Where FGM and MIM come from: this project's compiled attacks, or cleverhans.tf2.attacks itself.
ENGINES = ("compiled", "cleverhans")
AUTOATTACK_VERSIONS = ("standard", "rand", "custom")
# attacks.autoattack.ATTACKS, repeated so that flags are checked before TensorFlow loads (tested equal).
AUTOATTACK_PARTS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr")
# attacks.autoattack.VERSIONS, likewise: the attacks of the fixed versions, in order.
AUTOATTACK_FIXED = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
AUTOATTACK_NORMS = ("2", "inf")
AUTOATTACK_DEFAULT_EPS = {"2": 0.5, "inf": 8.0 / 255.0}   # RobustBench's CIFAR-10 radii

# --eval_preset: explicit flags win over these. quick: a first look in minutes; standard: the paper's
# Table 1 settings on the whole test split, plus the standard AutoAttack.
EVAL_PRESETS: dict[str, dict] = {
    "quick": dict(attacks=("fgm", "mim", "deepfool", "cw", "autoattack"), test_limit=200, mim_iters=20,
                  pgd_iters=10, deepfool_iters=50, cw_iters=20, cw_binary_steps=3, masking_iters=10,
                  autoattack_version="custom", autoattack_attacks=("apgd-ce", "apgd-t"), autoattack_iters=25,
                  autoattack_curve=(0.5, 2.0)),
    "standard": dict(attacks=DEFAULT_ATTACKS + ("autoattack",), test_limit=0, mim_iters=100, deepfool_iters=100,
                     cw_iters=100, cw_binary_steps=5, masking_iters=20, autoattack_version="standard",
                     autoattack_attacks=(), autoattack_iters=100, autoattack_square_queries=5000),
}


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
    pgd_eps: float = 0.5                # --attacks pgd: L2 PGD (Madry et al.), random start, step 2.5 eps/iters
    pgd_iters: int = 50
    attack_engine: str = "compiled"     # FGM and MIM: compiled here, or cleverhans.tf2.attacks
    autoattack_version: str = "standard"
    autoattack_attacks: tuple[str, ...] = ()   # --autoattack_version custom: which, in order
    autoattack_norm: str = "2"
    autoattack_eps: float | None = None        # None: 0.5 (L2) or 8/255 (L-inf)
    autoattack_iters: int = 100         # APGD's and FAB's iterations (the standard version's 100)
    autoattack_square_queries: int = 5000
    autoattack_seed: int = 0
    # Masking check: APGD-CE at these multiples of the radius (1 is AutoAttack's own APGD-CE stage);
    # robust accuracy must fall with eps. Empty: no curve.
    autoattack_curve: tuple[float, ...] = (0.25, 0.5, 2.0)
    eval_preset: str | None = None      # recorded only: run.py applies it to the flags
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
        for name in ("fgm_eps", "mim_eps", "mim_eps_iter", "masking_eps", "pgd_eps", "deepfool_overshoot",
                     "cw_lr", "cw_initial_const"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "mim_iters", "deepfool_iters", "cw_iters", "cw_binary_steps",
                     "masking_iters", "pgn_epochs", "deepfool_candidates", "pgd_iters", "autoattack_iters",
                     "autoattack_square_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.attack_engine not in ENGINES:
            raise ValueError(f"--attack_engine must be one of {','.join(ENGINES)}, got {self.attack_engine}")
        if self.eval_preset is not None and self.eval_preset not in EVAL_PRESETS:
            raise ValueError(f"--eval_preset must be one of {','.join(EVAL_PRESETS)}, got {self.eval_preset}")
        self._validate_autoattack()
        if self.test_limit < 0:
            raise ValueError(f"--test_limit must be >= 0, got {self.test_limit}")
        if any(c < 0 for c in self.pgn_c_l) or any(e < 0 for e in self.pgn_eps):
            raise ValueError("--pgn_c_l and --pgn_eps values must be >= 0")

    def _validate_autoattack(self) -> None:
        if self.autoattack_version not in AUTOATTACK_VERSIONS:
            raise ValueError(f"--autoattack_version must be one of {','.join(AUTOATTACK_VERSIONS)}, "
                             f"got {self.autoattack_version}")
        if self.autoattack_norm not in AUTOATTACK_NORMS:
            raise ValueError(f"--autoattack_norm must be 2 or inf, got {self.autoattack_norm}")
        unknown = [a for a in self.autoattack_attacks if a not in AUTOATTACK_PARTS]
        if unknown or len(set(self.autoattack_attacks)) != len(self.autoattack_attacks):
            raise ValueError(f"--autoattack_attacks takes distinct names from {','.join(AUTOATTACK_PARTS)}, "
                             f"got {','.join(self.autoattack_attacks)}")
        if self.autoattack_version == "custom" and not self.autoattack_attacks:
            raise ValueError("--autoattack_version custom needs --autoattack_attacks (e.g. apgd-ce,apgd-t)")
        if self.autoattack_version != "custom" and self.autoattack_attacks:
            raise ValueError(f"--autoattack_attacks needs --autoattack_version custom (version "
                             f"{self.autoattack_version} fixes its attacks)")
        if self.autoattack_eps is not None and self.autoattack_eps < 0:
            raise ValueError(f"--autoattack_eps must be >= 0, got {self.autoattack_eps}")
        if any(m <= 0 for m in self.autoattack_curve):
            raise ValueError("--autoattack_curve takes positive multiples of --autoattack_eps")

    @property
    def autoattack_radius(self) -> float:
        return AUTOATTACK_DEFAULT_EPS[self.autoattack_norm] if self.autoattack_eps is None else self.autoattack_eps

    @property
    def autoattack_parts(self) -> tuple[str, ...]:
        """The attacks AutoAttack runs, in order."""
        return AUTOATTACK_FIXED.get(self.autoattack_version, self.autoattack_attacks)

    def attack_settings(self, attack: str) -> dict:
        """The settings that determine an attack's result (its cache key, and the report's record)."""
        if attack == "autoattack":
            return {"version": self.autoattack_version, "attacks": list(self.autoattack_parts),
                    "norm": self.autoattack_norm, "eps": self.autoattack_radius, "iters": self.autoattack_iters,
                    "square_queries": self.autoattack_square_queries, "seed": self.autoattack_seed,
                    "batch_size": self.batch_size}
        prefix = {"fgm": "fgm_", "mim": "mim_", "pgd": "pgd_", "deepfool": "deepfool_", "cw": "cw_", "pgn": "pgn_",
                  "masking": "masking_"}[attack]
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k.startswith(prefix)}
        if attack in ("fgm", "mim") and self.attack_engine != "compiled":
            settings["engine"] = self.attack_engine  # absent for compiled: caches made before engines stay valid
        return settings
