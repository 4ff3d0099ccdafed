"""eval/cache.py: the evaluation cache with several writers at once (real processes writing one
entry while others clean up and read), and damaged entries read as missing, said in one line and
recomputed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from eval import cache

ROOT = Path(__file__).resolve().parents[1]
WRITERS, WRITES = 4, 25

# One writer: WRITES times the entry, all of it filled with its own number, each followed by the
# stop-time cleanup a process runs (which once removed every writer's temporary file).
WRITER = """
import sys
import numpy as np
from eval import cache
entry, me, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(times):
    cache.write(entry, {"x": np.full(400_000, me, np.int32), "tag": np.int64(me)})
    cache.remove_partial_writes(cache.Path(entry).parent)
print("ok")
"""
# A reader until the writers end: every entry it reads is one writer's, whole.
READER = """
import sys
import numpy as np
from eval import cache
entry, stop = sys.argv[1], cache.Path(sys.argv[2])
complaints, reads = [], 0
while not stop.exists():
    arrays = cache.read(entry, ("x", "tag"), say=complaints.append)
    if arrays is not None:
        reads += 1
        assert (arrays["x"] == arrays["tag"]).all(), "an entry mixing two writers"
print(reads, len(complaints), *complaints[:1])
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_parallel_writers_of_one_entry_never_break_each_other_or_a_reader(tmp_path):
    folder = tmp_path / "eval_cache"
    folder.mkdir()
    entry, stop = folder / "fgm-black-0123456789abcdef.npz", tmp_path / "stop"
    reader = _python(READER, str(entry), str(stop))
    writers = [_python(WRITER, str(entry), str(i), str(WRITES)) for i in range(WRITERS)]
    try:
        outs = [w.communicate(timeout=300) for w in writers]
        stop.touch()
        read_out, read_err = reader.communicate(timeout=60)
    finally:
        for process in writers + [reader]:
            process.kill()
    for process, (out, err) in zip(writers, outs):
        assert process.returncode == 0 and out == "ok\n", err[-2000:]
    assert reader.returncode == 0, read_err[-2000:]
    reads, complaints = read_out.split()[:2]
    assert int(complaints) == 0, read_out  # never a damaged entry
    final = cache.read(entry, ("x", "tag"))
    assert final is not None and int(final["tag"]) in range(WRITERS) and (final["x"] == final["tag"]).all()
    assert os.listdir(folder) == [entry.name]  # every temporary file gone


def test_a_cleanup_removes_its_own_and_dead_processes_temporary_files_only(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        host = cache.socket.gethostname()
        names = {f"tmp-{host}~{os.getpid()}~0a0a0a0a~x.npz": False,         # this process's: removed
                 f"tmp-{host}~{dead.pid}~0b0b0b0b~x.npz": False,            # a dead process's: removed
                 f"tmp-{host}~{live.pid}~0c0c0c0c~x.npz": True,             # a live writer's: kept
                 f"tmp-elsewhere~{os.getpid()}~0d0d0d0d~x.npz": True,       # another host's: kept
                 "tmp-x.npz": True,                                         # an older version's writer: kept
                 "x.npz": True}
        for name in names:
            (tmp_path / name).write_bytes(b"")
        cache.remove_partial_writes(tmp_path)
        assert {p.name for p in tmp_path.iterdir()} == {name for name, kept in names.items() if kept}
    finally:
        live.kill()


def _entry(path: Path) -> Path:
    cache.write(path, {"labels": np.arange(1000), "adv_pred": np.arange(1000), "meta": np.array("{}")})
    return path


@pytest.mark.parametrize("damage", ["eight_bytes", "truncated", "truncated_member", "missing_key", "empty"])
def test_a_damaged_entry_reads_as_missing_in_one_line(tmp_path, damage):
    path = _entry(tmp_path / "masking-white-0123456789abcdef.npz")
    whole = path.read_bytes()
    if damage == "eight_bytes":
        path.write_bytes(b"PK\x03\x04\x00\x00\x00\x00")
    elif damage == "truncated":
        path.write_bytes(whole[:len(whole) // 2])
    elif damage == "truncated_member":  # the zip's directory intact, a member's bytes zeroed
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("labels.npy")
        start = info.header_offset + 30 + len(info.filename) + 40
        path.write_bytes(whole[:start] + b"\0" * 4000 + whole[start + 4000:])
    elif damage == "missing_key":
        cache.write(path, {"labels": np.arange(3)})
    else:
        path.write_bytes(b"")
    said = []
    assert cache.read(path, ("labels", "adv_pred"), say=said.append) is None
    assert len(said) == 1 and said[0].startswith(f"{path}: damaged cache entry (") and \
        said[0].endswith("; recomputing it"), said
    assert cache.read(_entry(path), ("labels",), say=said.append) is not None and len(said) == 1


def test_a_missing_entry_is_silent(tmp_path):
    said = []
    assert cache.read(tmp_path / "nothing.npz", say=said.append) is None and said == []


@pytest.mark.slow
def test_a_truncated_attack_outcome_is_recomputed_by_the_evaluation(tmp_path, capsys):
    """suite.outcome, as --mode eval and a study's evaluations call it, on a truncated entry."""
    import keras

    from eval import suite
    from eval.config import EvalConfig

    class Target:  # what suite.outcome reads of a LoadedRun
        def __init__(self):
            keras.utils.set_random_seed(0)
            self.model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
            self.model_fn = lambda images: self.model(images, training=False)
            rng = np.random.default_rng(0)
            self.x = rng.random((10, 4, 4, 3), dtype=np.float32)
            self.y = rng.integers(0, 3, 10)
            self.run = type("Run", (), {"name": "tiny"})()

        def cache_path(self, attack, settings, source=None):
            return tmp_path / "eval_cache" / f"{attack}-white-0123456789abcdef.npz"

        def predict(self, images, batch_size):
            return np.argmax(self.model_fn(images).numpy(), axis=-1)

        def clean_predictions(self, batch_size):
            return self.predict(self.x, batch_size)

    target, cfg = Target(), EvalConfig(run_dirs=(), attacks=("fgm",), batch_size=4)
    first = suite.outcome("fgm", target, cfg)
    path = target.cache_path("fgm", None)
    path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    again = suite.outcome("fgm", target, cfg)
    lines = [line for line in capsys.readouterr().out.splitlines() if "recomputing" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: damaged cache entry ("), lines
    np.testing.assert_array_equal(again.adv_pred, first.adv_pred)
    assert suite.read_cached(path) is not None  # rewritten whole
