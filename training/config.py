"""Frozen configuration records, one per concern, built by ``run.py`` from its flags.

The defaults are the paper's Table 1 (Adam, lr 5e-4, batch 128, no weight decay, EMA 0.998,
adversarial coefficient 1.0, 200 epochs, PGD 10 iterations); presets in ``configs/`` change
them for CPU-sized runs.
"""
from __future__ import annotations

import dataclasses

from configs.settings import check_finite, default_eps
from training.defenses import settings_class
from training.defenses.settings import NORMS, DefenseSettings, check_settings, declared_fields, setting

__all__ = ["NORMS", "DefenseConfig", "RunConfig", "TrainConfig", "keeps_epoch"]

OPTIMIZERS = ("adam", "sgd")
# Keras compute policies. bfloat16 has float32's exponent range and needs no loss scaling; float16
# does (a LossScaleOptimizer per network). Logits, losses and attack gradients stay float32 in each.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SGD_MOMENTUM = 0.9
STRATEGIES = ("default", "mirrored", "multi_worker")  # what training/distribute.py builds (it imports these)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the classifier is optimised (independent of the defense). Each field is a --flag."""
    epochs: int = setting(200, "Training epochs.")
    batch_size: int = setting(128, "Batch size.")
    lr: float = setting(5e-4, "Adam learning rate.")
    optimizer: str = setting("adam", "adam (Table 1) or sgd (momentum 0.9, as L2L's public code, without its "
                             "schedule); --lr sets the learning rate of either.", choices=OPTIMIZERS)
    ema_decay: float = setting(0.998, "Decay of the weight average that is evaluated.")
    ema_warmup: bool = setting(True, "Ramp the EMA decay up as (1+t)/(10+t) (tf.train.ExponentialMovingAverage).")
    width: float = setting(1.0, "Multiplier of the classifier's filter counts (0.25 for CPU runs).")
    seed: int = setting(0, "Seed of initialisation, data order, augmentation and random starts.")
    # mixed_bfloat16: see training/precision.py
    precision: str = setting("float32", "Compute policy: float32, mixed_float16 (GPUs; ~9x slower on a CPU; "
                             "loss-scaled) or mixed_bfloat16 (CPUs with AMX, some with AVX512-BF16: training says "
                             "when a probe finds it slower than float32 here; TPUs, Ampere+ GPUs).", choices=PRECISIONS)

    @property
    def loss_scaling(self) -> bool:
        """float16's 5-bit exponent underflows small gradients; bfloat16's 8 bits do not."""
        return self.precision == "mixed_float16"

    def validate(self) -> None:
        _check_finite(self)
        _positive(self, "epochs", "batch_size", "lr", "width")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True, init=False)
class DefenseConfig:
    """The defense a run trains with: its name, the settings several defenses share (declared here
    once), and the defense's own settings (``own``, its declaration in training/defenses/*_settings.py).

    ``DefenseConfig("pgn", c_l=10, gen_width=0.25)`` sorts keyword settings into shared and own and
    refuses a setting the defense does not have. Own settings read as attributes too (``cfg.c_l``),
    as config.json records them: ``as_dict`` is the flat {setting: value} of the run's identity,
    the shared settings and the defense's own, nothing of other defenses.
    """
    defense: str = "pgn"
    eps: float | None = setting(None, "Radius of the training perturbations (pixels in [0, 1]): default by the "
                                "defense's norm, L2 0.5 or L-inf 8/255 (resolved()).", kind=float, at_least=0.0)
    adv_coeff: float = setting(1.0, "a in (1-a) CE(x) + a CE(x_adv) (Table 1 'Adv Coefficient').",
                               at_least=0.0, at_most=1.0)
    gen_width: float = setting(1.0, "Width multiplier of the learned attacker network (PGN's G, L2L's A, RvS's G).",
                               above=0.0)
    own: DefenseSettings | None = None

    def __init__(self, defense: str = "pgn", own: DefenseSettings | None = None, **values):
        cls = settings_class(defense)
        shared = {f.name: values.pop(f.name, f.default) for f in declared_fields(DefenseConfig)}
        unknown = sorted(set(values) - {f.name for f in declared_fields(cls)})
        if unknown:
            raise ValueError(f"--{unknown[0]} is not a setting of --defense {defense} (its settings: "
                             f"{', '.join(self.setting_names(defense))})")
        if own is None:
            own = cls(**values)
        elif type(own) is not cls:
            raise ValueError(f"the settings of --defense {own.name} cannot configure --defense {defense}")
        elif values:
            own = dataclasses.replace(own, **values)
        for name, value in {"defense": defense, **shared, "own": own}.items():
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        own = self.__dict__.get("own")  # only reached for names that are not fields
        if own is not None and name in own.__dataclass_fields__:
            return getattr(own, name)
        raise AttributeError(f"{type(self).__name__} of --defense {self.__dict__.get('defense')} has no '{name}'")

    @classmethod
    def setting_names(cls, defense: str) -> tuple[str, ...]:
        """The settings of ``defense``'s runs: the shared ones, then its own (the sweepable names)."""
        return tuple(f.name for f in declared_fields(cls)) + tuple(f.name for f in declared_fields(settings_class(defense)))

    @classmethod
    def setting_field(cls, defense: str, name: str) -> dataclasses.Field:
        for f in declared_fields(cls) + declared_fields(settings_class(defense)):
            if f.name == name:
                return f
        raise KeyError(name)

    def as_dict(self) -> dict:
        """{setting: value}: "defense", the shared settings and this defense's own (config.json's)."""
        shared = {f.name: getattr(self, f.name) for f in declared_fields(self)}
        return {"defense": self.defense, **shared, **dataclasses.asdict(self.own)}

    def setting_defaults(self) -> dict:
        """Each setting of this defense at its declared default (eps unresolved: None)."""
        return DefenseConfig(self.defense).as_dict()

    def variant(self) -> dict:
        """{setting: value} of this defense's own categorical settings (text or boolean: which
        algorithm, not how strong) that differ from their defaults, e.g. {"pgn_grad_scale": "unit"}:
        what names a run beside its sweep's value (study.sweep) and a curve of its own (the report)."""
        default = settings_class(self.defense)()
        return {f.name: getattr(self.own, f.name) for f in declared_fields(self.own)
                if f.metadata["kind"] in (str, bool) and getattr(self.own, f.name) != getattr(default, f.name)}

    @property
    def norm(self) -> str:
        """The norm of the defense's threat model (its declaration decides; L2 unless it says)."""
        return self.own.norm

    def resolved(self) -> "DefenseConfig":
        """This config with its radius decided: ``eps`` as given, else the norm's default
        (configs.settings.default_eps: L2 0.5, L-inf 8/255), so that a sweep over the norm, a
        benchmark and a test get the same radius for the same norm."""
        if self.eps is not None:
            return self
        return dataclasses.replace(self, eps=default_eps(self.norm))

    def validate(self) -> None:
        check_settings(self)
        self.own.validate()


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run lives and how it reports; none of this changes what is learned. Each field but
    run_dir (run.py's --run_dir, which names the runs an evaluation reads too) is a --flag."""
    run_dir: str = ""
    overwrite: bool = setting(False, "Move an existing --run_dir aside and start afresh.")
    log_every_steps: int = setting(50, "TensorBoard / metrics.jsonl cadence in steps.")
    checkpoint_every_minutes: float = setting(10.0, "Checkpoint this often within an epoch (0: epoch ends only).")
    monitor_size: int = setting(512, "Test examples attacked with the training attack each epoch.")
    max_checkpoints: int = setting(3, "Checkpoints kept in <run_dir>/checkpoints.")
    # Stop with a checkpoint after this many steps in total.
    stop_after_steps: int = setting(0, "Save and stop once this many steps are done (0: never).")
    # The run is finished early, at the accuracy a report matches at, with the trajectory a full run
    # has up to there (no learning-rate schedule depends on the epoch count). Its last epoch is not
    # the protocol's end: a report compares it in Table 2 but draws no curve point for it.
    stop_at_benign: float = setting(0.0, "Finish early after the first epoch whose benign test accuracy reaches "
                                    "this (0: never): a Table 2 run matched at that accuracy needs no more (the "
                                    "report draws no curve point for it).")
    keep_checkpoints: str = setting("last", "Keep the EMA classifier of every epoch (all), of the last (last), or "
                                    "of every N-th epoch and the last (N), for --match_benign.")
    strategy: str = setting("default", "tf.distribute: default (one device), mirrored (every GPU of this machine, "
                            "or --cpu_replicas logical CPUs without one) or multi_worker (TF_CONFIG).",
                            choices=STRATEGIES)
    cpu_replicas: int = setting(2, "--strategy mirrored on a machine without GPU: logical CPU devices.")

    def validate(self) -> None:
        _check_finite(self)
        _positive(self, "log_every_steps", "monitor_size", "max_checkpoints", "cpu_replicas")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'")
        if self.keep_checkpoints not in ("last", "all") and not (
                self.keep_checkpoints.isdigit() and int(self.keep_checkpoints) > 0):
            raise ValueError(f"--keep_checkpoints must be all, last or a positive number of epochs, "
                             f"got '{self.keep_checkpoints}'")
        if self.checkpoint_every_minutes < 0 or self.stop_after_steps < 0:
            raise ValueError("--checkpoint_every_minutes and --stop_after_steps must be >= 0")
        if not 0.0 <= self.stop_at_benign <= 1.0:
            raise ValueError(f"--stop_at_benign is a benign accuracy in [0, 1] (0: never), got {self.stop_at_benign}")


def keeps_epoch(keep_checkpoints: str, epoch: int, epochs: int) -> bool:
    """Whether the EMA classifier of ``epoch`` (1-based) is kept: every epoch, only the last, or
    every N-th epoch and the last."""
    if keep_checkpoints == "all" or epoch == epochs:
        return True
    return keep_checkpoints != "last" and epoch % int(keep_checkpoints) == 0


def _check_finite(cfg) -> None:
    for field in dataclasses.fields(cfg):
        check_finite(field.name, getattr(cfg, field.name))


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ValueError(f"--{name} must be > 0, got {value}")
