"""A study whose matching target is a number evaluates each run soon after it trains (once the
black-box source has finished), ahead of the training still to do, and copies each finished run's
log and evaluation record into ``[report] training_logs`` to commit (study/runner.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.runner import Options, run_study
from study.spec import load

pytestmark = pytest.mark.slow

SPEC = """
[study]
seeds = [0]
[training]
epochs = 2
batch_size = 16
width = 0.125
gen_width = 0.125
augment = "none"
monitor_size = 8
log_every_steps = 2
keep_checkpoints = "all"
[[arms]]
defense = "none"
[[arms]]
defense = "fgm"
sweep = { eps = [0.5, 1.0] }
table = 0.5
[matching]
target = 0.1
tolerance = 1.0
[evaluation]
attacks = ["fgm"]
test_limit = 12
masking_iters = 1
source = { defense = "none", seed = 3 }
[report]
figure2_epochs = 1
training_logs = "LOGS"
"""


def test_each_run_is_evaluated_soon_after_it_trains_and_its_log_copied_to_commit(tiny_folder, tmp_path):
    logs = tmp_path / "logs"
    path = tmp_path / "early.toml"
    path.write_text(SPEC.replace("LOGS", str(logs)))
    spec = load(path, dataset=f"folder:{tiny_folder}")
    assert [r.name for r in spec.runs(tmp_path)] == ["none-seed0", "none-seed3", "fgm-eps0.5-seed0",
                                                    "fgm-eps1-seed0"]  # the source after the first clean run
    root, lines = tmp_path / "root", []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=lines.append) == 0, "\n".join(lines)

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # Nothing is evaluated before the source finished; then each finished run is, before the next
    # run trains.
    queued = at("evaluation of none-seed0: queued, ahead of the training still to do")
    assert at("run none-seed3: done") < queued < at("evaluation of none-seed0: done") < \
        at("run fgm-eps0.5-seed0: training on")
    assert at("run fgm-eps0.5-seed0: done") < at("evaluation of fgm-eps0.5-seed0: done") < \
        at("run fgm-eps1-seed0: training on")
    assert at("run fgm-eps1-seed0: done") < at("evaluation of fgm-eps1-seed0: done")
    assert "evaluation: 0 run(s) to evaluate, 3 evaluated" in lines  # nothing left for the end
    report = json.loads((root / "report" / "report.json").read_text())
    # The spec's table value, though eps 1.0 has as many seeds (one) as eps 0.5.
    assert [r["run"] for r in report["table"]["fgm"]["rows"]] == ["fgm-eps0.5-seed0"]
    for name in ("none-seed0", "fgm-eps0.5-seed0", "fgm-eps1-seed0", "none-seed3"):
        copied = logs / name
        assert (copied / "metrics.jsonl").read_bytes() == (root / name / "metrics.jsonl").read_bytes()
        assert json.loads((copied / "config.json").read_text())["settings"]["train.seed"] in (0, 3)
    for name in ("none-seed0", "fgm-eps0.5-seed0", "fgm-eps1-seed0"):  # the source is not evaluated itself
        record = json.loads((logs / name / f"evaluated-{name}.json").read_text())
        assert record["run"] == name and record["key"]
    assert not (logs / "none-seed3" / "evaluated-none-seed3.json").exists()

    # A second driver finds everything done: it trains, evaluates and copies nothing.
    again: list[str] = []
    assert run_study(spec, str(root), Options("local", None, 1, 0), say=again.append) == 0, "\n".join(again)
    assert "evaluation: 0 run(s) to evaluate, 3 evaluated" in again
    assert not [line for line in again if "copied, to commit" in line or "queued" in line and "report" not in line]

