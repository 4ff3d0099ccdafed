"""A report's protocol: what it compared, with what, and on which machines.

The hardware is each run's, read from its config.json (``host``: hostname, platform, CPUs and,
where the run recorded it, ``cpu_model`` and ``gpus`` (training/host.py); ``train.precision``): runs trained on a
cluster's different machines, or on a new machine after the old one went, are named in groups
that agree, so a reader sees which numbers came from where.
"""
from __future__ import annotations

import os
import platform
import time

from study.matching import epoch_records
from study.published import paper_for
from training.rundir import git_state, package_versions


def run_hardware(config: dict) -> dict:
    """What one run trained on and in: its precision, CPU (model when recorded, else the
    platform), core count and GPUs ("not recorded" for runs made before they were)."""
    host = config.get("host") or {}
    settings = config.get("settings") or {}
    gpus = host.get("gpus")
    return {"precision": settings.get("train.precision", "float32"),
            "cpu": host.get("cpu_model") or f"{host.get('platform', 'unknown platform')} (CPU model not recorded)",
            "cpus": host.get("cpus"),
            "gpus": "not recorded" if gpus is None else (", ".join(gpus) if gpus else "none")}


def hardware_groups(runs) -> list[dict]:
    """The runs grouped by ``run_hardware`` (one group where every run agrees), each with its runs."""
    groups: dict = {}
    for member in runs:
        key = tuple(sorted(run_hardware(member.run.config).items()))
        groups.setdefault(key, []).append(member.run.name)
    return [{**dict(key), "runs": sorted(names)} for key, names in groups.items()]


def hardware_text(protocol: dict) -> str:
    """The protocol's hardware in words: each group, and which runs it holds when there are several."""
    groups = protocol.get("run_hardware")
    if not groups:  # reports made before runs' hardware was read
        return f"{protocol['hardware']['platform']}, {protocol['hardware']['cpus']} CPUs"
    parts = []
    for group in groups:
        text = f"{group['precision']} on {group['cpu']}, {group['cpus']} CPUs, GPUs: {group['gpus']}"
        parts.append(text if len(groups) == 1 else f"{text} ({', '.join(group['runs'])})")
    return "; ".join(parts)


def protocol(cfg, dataset, runs, groups, target_spec, target, tolerance, attacks: tuple) -> dict:
    first = runs[0].run
    settings = first.settings
    host = first.config.get("host", {})
    train_seconds = sum(r["seconds_per_epoch"] for m in runs for r in epoch_records(m.run.run_dir).values())
    return {
        "dataset": dataset.name, "dataset_source": dataset.source, "num_classes": int(dataset.num_classes),
        "paper_table": paper_for(dataset.num_classes),  # the paper's table its numbers are set beside
        "train_images": first.config["dataset"].get("train_size"), "test_images": int(len(dataset.test_labels)),
        "width": settings["train.width"], "epochs": settings["train.epochs"], "batch_size": settings["train.batch_size"],
        "lr": settings["train.lr"], "augment": settings["data.augment"],
        "monitor_images": first.config.get("flags", {}).get("monitor_size"),
        "sweeps": {d: {"setting": ms[0].swept, "values": sorted({m.value for m in ms}, key=lambda v: (v is None, v)),
                       "seeds": sorted({m.seed for m in ms})} for d, ms in groups.items()},
        "match_benign": target_spec if isinstance(target_spec, str) or target_spec is None else float(target_spec),
        "target": target, "tolerance": tolerance,
        "attack_settings": {a: cfg.attack_settings(a) for a in attacks},
        "source_run": str(cfg.source_run) if cfg.source_run else None,
        "training_hours": round(train_seconds / 3600, 2),
        "hardware": {"platform": host.get("platform", platform.platform()), "cpus": host.get("cpus", os.cpu_count())},
        "run_hardware": hardware_groups(runs),
        "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "training_commits": sorted({str((r.run.config.get("git") or {}).get("commit"))[:10] for r in runs}),
        "report_git": git_state(),
        # the study spec the runs were trained by (run.py --mode study records it), if one spec trained them all
        "study": studies.pop() if len(studies := {r.run.config.get("flags", {}).get("study") for r in runs}) == 1 else None,
    }
