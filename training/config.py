"""Frozen configuration records, one per concern, built by ``run.py`` from its flags.

The defaults are the paper's Table 1 (Adam, lr 5e-4, batch 128, no weight decay, EMA 0.998,
adversarial coefficient 1.0, 200 epochs, PGD 10 iterations); presets in ``configs/`` change
them for CPU-sized runs.
"""
from __future__ import annotations

import dataclasses
import math

# The defenses run.py offers; training.defenses.DEFENSES maps each to its class (a test checks
# the two agree). Kept here so that the command line parses without importing TensorFlow.
DEFENSE_NAMES = ("none", "fgm", "pgd", "pgn", "l2l", "rvs")
PGN_UPDATES = ("simultaneous", "alternating")
PGN_GRADS = ("prob", "loss")
PGN_CLASSIFIER_GRADS = ("fixed", "through_input_gradient")
PGN_GRAD_SCALES = ("batch_mean", "per_example", "unit")
GEN_INITS = ("glorot_uniform", "he_normal")
NORMS = ("2", "inf")
L2L_VARIANTS = ("grad", "two_step", "naive")
OPTIMIZERS = ("adam", "sgd")
# Keras compute policies. bfloat16 has float32's exponent range and needs no loss scaling; float16
# does (a LossScaleOptimizer per network). Logits, losses and attack gradients stay float32 in each.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SGD_MOMENTUM = 0.9
STRATEGIES = ("default", "mirrored", "multi_worker")  # = training.distribute.STRATEGIES (a test checks)
GENERATOR_INPUTS = ("grad", "image", "label")  # = models.generator.GENERATOR_INPUTS (a test checks)
L2_EPS = 0.5        # this project's threat model: L2 0.5 on CIFAR-10 (RobustBench's L2 radius)
LINF_EPS = 8 / 255  # the L-infinity radius of the L2L and RvS papers

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the classifier is optimised (independent of the defense)."""
    epochs: int = 200
    batch_size: int = 128
    lr: float = 5e-4
    optimizer: str = "adam"       # "adam" (Table 1) or "sgd" (momentum 0.9, L2L's public code; no schedule)
    ema_decay: float = 0.998
    ema_warmup: bool = True       # decay min(d, (1+t)/(10+t)) as tf.train.ExponentialMovingAverage
    width: float = 1.0
    seed: int = 0
    precision: str = "float32"    # a PRECISIONS policy; mixed_bfloat16 pays on CPUs with AMX / AVX512-BF16

    @property
    def loss_scaling(self) -> bool:
        """float16's 5-bit exponent underflows small gradients; bfloat16's 8 bits do not."""
        return self.precision == "mixed_float16"

    def validate(self) -> None:
        _finite(self)
        _positive(self, "epochs", "batch_size", "lr", "width")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
    """Which inner attack the classifier trains against, and its strength (names: training.defenses)."""
    defense: str = "pgd"
    eps: float | None = None      # radius of the training perturbations (pixels in [0, 1]); None: by norm (resolved())
    pgd_steps: int = 10           # Table 1 "PGD iter"
    adv_coeff: float = 1.0        # a in (1 - a) CE(x) + a CE(x_adv); Table 1 "Adv Coefficient"
    c_l: float = 50.0             # PGN's perturbation penalty (eq. 4; Tables 2-3 use 50)
    pgn_grad: str = "prob"        # G's gradient input: of F(x)_y ("prob", the paper) or of the CE
    pgn_update: str = "simultaneous"
    pgn_inputs: str = "grad,image,label"
    pgn_classifier_grad: str = "fixed"    # x_adv constant for F's update, or the reference's second order
    pgn_grad_scale: str = "batch_mean"    # G's gradient input: the paper's 1/B-scaled one, per example, or unit L2
    gen_init: str = "glorot_uniform"      # the generator's kernel initialiser (the reference code: he_normal)
    gen_width: float = 1.0        # width multiplier of the learned attacker (PGN's G, L2L's A, RvS's G)
    # L2L (learning to defend by learning to attack; methods.md section 3)
    l2l_norm: str = "2"           # "2": ||delta||_2 <= eps (this project's threat model); "inf": eps * tanh(h)
    l2l_variant: str = "grad"     # "grad" | "two_step" | "naive"
    attacker_lr: float = 1e-3     # the attacker network's Adam learning rate (two time scales)
    # RvS (robustness via synthesis; methods.md section 4)
    rvs_norm: str = "inf"         # the published threat model; "2" as an option
    rvs_z_dim: int = 640
    rvs_gen_lr: float = 0.01      # the generator's momentum-SGD learning rate
    label_smoothing: float = 0.5
    ot_weight: float = 1.0

    @property
    def norm(self) -> str:
        """The norm of the defense's threat model: L-inf for L2L and RvS when asked, else L2."""
        if self.defense == "rvs":
            return self.rvs_norm
        if self.defense == "l2l":
            return self.l2l_norm
        return "2"

    def resolved(self) -> "DefenseConfig":
        """This config with its radius decided: ``eps`` as given, else the norm's default (L2 0.5,
        L-inf 8/255). The one place a radius is chosen, so that a sweep over the norm, a benchmark
        and a test get the same radius for the same norm."""
        if self.eps is not None:
            return self
        return dataclasses.replace(self, eps=LINF_EPS if self.norm == "inf" else L2_EPS)

    def validate(self) -> None:
        _finite(self)
        if self.eps is not None and self.eps < 0:
            raise ValueError(f"--eps must be >= 0, got {self.eps}")
        if self.pgd_steps < 1:
            raise ValueError(f"--pgd_steps must be >= 1, got {self.pgd_steps}")
        if not 0.0 <= self.adv_coeff <= 1.0:
            raise ValueError(f"--adv_coeff must be in [0, 1], got {self.adv_coeff}")
        if self.c_l < 0:
            raise ValueError(f"--c_l must be >= 0, got {self.c_l}")
        if self.gen_width <= 0:
            raise ValueError(f"--gen_width must be > 0, got {self.gen_width}")
        inputs = self.pgn_inputs.split(",")
        if not inputs or set(inputs) - set(GENERATOR_INPUTS) or len(set(inputs)) != len(inputs):
            raise ValueError(f"--pgn_inputs '{self.pgn_inputs}' must be a comma-separated subset of "
                             f"{','.join(GENERATOR_INPUTS)}")
        if self.l2l_norm not in NORMS or self.rvs_norm not in NORMS:
            raise ValueError(f"--l2l_norm and --rvs_norm must be one of {', '.join(NORMS)}")
        if self.l2l_variant not in L2L_VARIANTS:
            raise ValueError(f"--l2l_variant must be one of {', '.join(L2L_VARIANTS)}, got {self.l2l_variant}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if min(self.attacker_lr, self.rvs_gen_lr, self.rvs_z_dim) <= 0 or self.ot_weight < 0:
            raise ValueError("--attacker_lr, --rvs_gen_lr and --rvs_z_dim must be > 0, --ot_weight >= 0")
        if self.pgn_update not in PGN_UPDATES or self.pgn_grad not in PGN_GRADS:
            raise ValueError(f"--pgn_update must be one of {PGN_UPDATES}, --pgn_grad one of {PGN_GRADS}")
        for name, choices in (("pgn_classifier_grad", PGN_CLASSIFIER_GRADS), ("pgn_grad_scale", PGN_GRAD_SCALES),
                              ("gen_init", GEN_INITS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name} must be one of {', '.join(choices)}, got '{getattr(self, name)}'")
        if self.pgn_classifier_grad == "through_input_gradient" and self.pgn_update != "simultaneous":
            raise ValueError("--pgn_classifier_grad through_input_gradient needs --pgn_update simultaneous "
                             "(the reference code's order, where F's gradient passes through G's input)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run lives and how it reports; none of this changes what is learned."""
    run_dir: str = ""
    overwrite: bool = False
    log_every_steps: int = 50
    checkpoint_every_minutes: float = 10.0
    monitor_size: int = 512       # test examples attacked each epoch with the training attack
    max_checkpoints: int = 3
    stop_after_steps: int = 0     # stop (with a checkpoint) after this many steps in total; 0 = never
    keep_checkpoints: str = "last"  # EMA classifier per epoch: "last", "all" or every N-th epoch ("N")
    strategy: str = "default"     # tf.distribute: "default", "mirrored" or "multi_worker" (training/distribute.py)
    cpu_replicas: int = 2         # mirrored without a GPU: logical CPU devices

    def validate(self) -> None:
        _finite(self)
        _positive(self, "log_every_steps", "monitor_size", "max_checkpoints", "cpu_replicas")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'")
        if self.keep_checkpoints not in ("last", "all") and not (
                self.keep_checkpoints.isdigit() and int(self.keep_checkpoints) > 0):
            raise ValueError(f"--keep_checkpoints must be all, last or a positive number of epochs, "
                             f"got '{self.keep_checkpoints}'")
        if self.checkpoint_every_minutes < 0 or self.stop_after_steps < 0:
            raise ValueError("--checkpoint_every_minutes and --stop_after_steps must be >= 0")


def keeps_epoch(keep_checkpoints: str, epoch: int, epochs: int) -> bool:
    """Whether the EMA classifier of ``epoch`` (1-based) is kept: every epoch, only the last, or
    every N-th epoch and the last."""
    if keep_checkpoints == "all" or epoch == epochs:
        return True
    return keep_checkpoints != "last" and epoch % int(keep_checkpoints) == 0


def _finite(cfg) -> None:
    """Every number of a config is finite: nan or inf would train (or fail) far from the flag."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{field.name} must be a finite number, got {value}")


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ValueError(f"--{name} must be > 0, got {value}")
