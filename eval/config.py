"""The evaluation protocol's settings; defaults are the paper's (Table 1, section 4.2) and the
CleverHans v3 defaults its reference code used (docs/methods.md section 2)."""
from __future__ import annotations

import dataclasses

# AUTOATTACK_PARTS: the attacks a custom AutoAttack chooses from; AUTOATTACK_FIXED: the fixed
# versions' attacks in order (the lists attacks.autoattack runs).
from configs.autoattack import ATTACKS as AUTOATTACK_PARTS, VERSIONS as AUTOATTACK_FIXED
from configs.settings import default_eps, setting

# White-box attacks and the minimum-norm ones; "pgn" is the generator-as-attack study (Figure 3);
# "autoattack" is Croce & Hein's standard evaluation (attacks/autoattack.py), beyond the paper.
ATTACKS = ("fgm", "mim", "pgd", "deepfool", "cw", "autoattack", "pgn")
DEFAULT_ATTACKS = ("fgm", "mim", "deepfool", "cw")
MIN_NORM_ATTACKS = ("deepfool", "cw")
# Where FGM and MIM come from: this project's compiled attacks, or cleverhans.tf2.attacks itself.
ENGINES = ("compiled", "cleverhans")
AUTOATTACK_VERSIONS = ("standard", "rand", "custom")
AUTOATTACK_NORMS = ("2", "inf")

# --eval_preset (--mode eval and --mode report): explicit flags win over these. quick: a first look
# in minutes; standard: the paper's Table 1 settings on the whole test split, plus the standard AutoAttack.
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
    """The evaluation's settings. Each ``setting`` field is a --flag (run.py generates it); run_dirs
    is --run_dir, and test_limit, cache_dir and batch_size are the data and training flags of the
    same names (their defaults the same: tests/test_flags.py)."""
    run_dirs: tuple[str, ...]
    # Black-box: attacks crafted on this run, transferred.
    source_run: str | None = setting(None, "eval: run on which black-box attacks are crafted.", kind=str)
    attacks: tuple[str, ...] = setting(DEFAULT_ATTACKS, f"eval: attacks to run, from {','.join(ATTACKS)}.", of=str)
    test_limit: int = 0                 # class-balanced test subset; 0 = the whole test split
    eval_dir: str | None = setting(None, "eval: where results go (default <first run>/eval).", kind=str)
    cache_dir: str | None = None        # the decoded-image cache's folder (data.DataConfig); None: its default
    batch_size: int = 128
    fgm_eps: float = setting(0.5, "eval: FGM L2 eps.")                  # Table 1 "FGS attack eps" (L2)
    mim_eps: float = setting(0.5, "eval: MIM L2 eps.")                  # Table 1 "MIM attack eps" (L2)
    mim_iters: int = setting(100, "eval: MIM iterations.")              # Table 1 "MIM attack iter"
    mim_eps_iter: float = setting(0.06, "eval: MIM step.")              # CleverHans's default step
    deepfool_iters: int = setting(100, "eval: DeepFool iterations.")    # Table 1 "DF attack iter"
    deepfool_overshoot: float = setting(0.02, "eval: DeepFool overshoot.")
    deepfool_candidates: int = setting(10, "eval: DeepFool candidate classes.")
    cw_iters: int = setting(100, "eval: CW-L2 iterations per binary-search step.")  # Table 1 "CW attack iter"
    cw_binary_steps: int = setting(5, "eval: CW-L2 binary-search steps.")
    cw_lr: float = setting(5e-3, "eval: CW-L2 Adam learning rate.")
    cw_initial_const: float = setting(1e-2, "eval: CW-L2 initial constant.")
    # PGD with this L2 budget must bring accuracy near 0.
    masking_eps: float = setting(5.0, "eval: L2 budget of the large-budget PGD check.")
    masking_iters: int = setting(20, "eval: iterations of the large-budget PGD check.")
    # --attacks pgd: L2 PGD (Madry et al.)
    pgd_eps: float = setting(0.5, "eval --attacks pgd: L2 PGD eps (random start, step 2.5 eps/iters).")
    pgd_iters: int = setting(50, "eval --attacks pgd: PGD iterations.")
    attack_engine: str = setting("compiled", "eval: FGM and MIM from this project's compiled attacks, or from "
                                 "cleverhans.tf2.attacks itself.", choices=ENGINES)
    autoattack_version: str = setting("standard", "eval --attacks autoattack: standard (APGD-CE, APGD-T, FAB-T, "
                                      "Square), rand, or custom.", choices=AUTOATTACK_VERSIONS)
    autoattack_attacks: tuple[str, ...] = setting((), "eval --autoattack_version custom: attacks in order, from "
                                                  f"{','.join(AUTOATTACK_PARTS)}.", kind=tuple, of=str)
    autoattack_norm: str = setting("2", "eval: AutoAttack threat model.", choices=AUTOATTACK_NORMS)
    # None: the norm's radius, configs.settings.default_eps.
    autoattack_eps: float | None = setting(None, "eval: AutoAttack radius (default 0.5 for L2, 8/255 for L-inf).",
                                           kind=float)
    # APGD's and FAB's iterations (the standard version's 100)
    autoattack_iters: int = setting(100, "eval: APGD and FAB iterations in AutoAttack.")
    autoattack_square_queries: int = setting(5000, "eval: Square's queries.")
    autoattack_seed: int = setting(0, "eval: AutoAttack's seed.")
    # Masking check: APGD-CE at these multiples of the radius (1 is AutoAttack's own APGD-CE stage);
    # robust accuracy must fall with eps. Empty: no curve.
    autoattack_curve: tuple[float, ...] = setting((0.25, 0.5, 2.0), "eval: multiples of --autoattack_eps at which "
                                                  "APGD-CE runs for the monotonicity check (empty: none).", of=float)
    # Recorded only: run.py applies it to the flags.
    eval_preset: str | None = setting(None, "eval: quick (200 images, fewer iterations, AutoAttack apgd-ce,apgd-t) "
                                      "or standard (Table 1's settings, all test images, standard AutoAttack); "
                                      "explicit flags win.", choices=tuple(EVAL_PRESETS), kind=str)
    pgn_c_l: tuple[float, ...] = setting((1.0, 5.0, 20.0, 50.0), "eval --attacks pgn: c_L sweep (Figure 3).",
                                         of=float)
    pgn_epochs: int = setting(2, "eval --attacks pgn: generator training epochs.")
    pgn_train_limit: int = setting(10000, "eval --attacks pgn: training images used.")
    pgn_eps: tuple[float, ...] = setting((0.1, 0.25, 0.5, 1.0), "eval --attacks pgn: FGM/PGD eps sweep.", of=float)

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
        return default_eps(self.autoattack_norm) if self.autoattack_eps is None else self.autoattack_eps

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
