"""How ``--mode study`` runs a spec: the engine and each job's resources, declared as settings
(configs/settings.py) from which run.py makes the flags. Imports no TensorFlow and no Ray."""
from __future__ import annotations

import dataclasses

from configs.settings import setting

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Options:
    engine: str = setting("local", "study: local (one job at a time on this machine) or ray (each training run and "
                          "evaluation a Ray task).", choices=ENGINES)
    ray_address: str | None = setting(None, "study --engine ray: auto or HOST:PORT of a running Ray cluster to join "
                                      "(default: start a Ray instance on this machine).", kind=str)
    cpus_per_run: float | None = setting(None, "study: CPUs (and TensorFlow threads) per job (default: every core "
                                         "with --engine local, 1 with --engine ray).", kind=float, above=0)
    gpus_per_run: float = setting(0.0, "study --engine ray: GPUs per job.", at_least=0)
