"""Which of a study's runs need an evaluation, and whether one already done still stands.

A report attacks each Table 2 run at its matched epoch, each run's final weights for its curve
point, and one FGM-AT run over its epochs (Figure 2); the outcomes are cached per run
(``eval.suite``). A study runs one evaluation job per run (``report.build_report(only=name)``),
in parallel, before the report itself, which then finds every outcome cached. Each job ends by
writing its key (``key``) beside the study's state; the same key later means nothing changed
(the same weights, matched epoch, attacks and source), so the job is skipped.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eval.runs import TrainedRun
from study import report
from study.matching import closest_epoch


def evaluation_keys(root: Path, cfg, options: dict) -> dict[str, str]:
    """{run name: the key of its evaluation} for every finished run under ``root`` (the source
    aside) that has weights to attack, Table 2's runs first; ``options``: the report's (match_benign, tolerance,
    curve_test_limit, figure2_epochs, autoattack_complete)."""
    runs, _, source, groups, table_runs, _, target = report.plan(str(root), cfg, options["match_benign"])
    table = {id(m) for members in table_runs.values() for m in members}
    fgm = [r for r in table_runs.get("fgm", []) if not r.finished_early]
    figure2 = min(fgm, key=lambda r: r.seed) if fgm else None
    common = {"attacks": {a: cfg.attack_settings(a) for a in sorted(set(cfg.attacks) | {"masking"})},
              "test_limit": cfg.test_limit, "source": _fingerprint(source) if source else None,
              **{k: options[k] for k in ("curve_test_limit", "autoattack_complete")}}
    keys = {}
    members = [m for ms in groups.values() for m in ms if m.has_weights]
    # Table runs first: the first evaluation crafts the black-box source's adversarials for the rest.
    for member in sorted(members, key=lambda m: id(m) not in table):
        parts = {}
        if id(member) in table:
            match = closest_epoch(member.accuracies, member.kept or [max(member.accuracies)], target,
                                  options["tolerance"])
            epoch = match.epoch if member.kept else None
            parts["table"] = [epoch, _fingerprint(member.run, epoch)]
        if not member.finished_early:
            parts["curve"] = _fingerprint(member.run)
        if member is figure2:
            epochs = report.spaced(member.kept, options["figure2_epochs"])
            parts["figure2"] = [[e, _fingerprint(member.run, e)] for e in epochs]
        if parts:
            text = json.dumps({**common, **parts}, sort_keys=True, default=str)
            keys[member.run.name] = hashlib.sha1(text.encode()).hexdigest()[:16]
    return keys


def _fingerprint(run: TrainedRun, epoch: int | None = None) -> str:
    return TrainedRun(run.run_dir, run.config, epoch).fingerprint()
