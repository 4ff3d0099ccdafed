"""training/lock.py on a file system without flock (NFS v3 without its lock daemons: ENOLCK; Lustre
without -o flock: ENOSYS): one line naming the file system and the fix, injected as the errno."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_cli import ROOT, assert_one_line_error
from training import lock


def _no_flock(code: int):
    def flock(fd, operation):
        raise OSError(code, os.strerror(code))
    return flock


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_a_file_system_without_flock_is_one_line_naming_it_and_the_fix(tmp_path, monkeypatch, code):
    monkeypatch.setattr(lock.fcntl, "flock", _no_flock(code))
    kind, mount = lock.file_system(tmp_path)
    with pytest.raises(lock.LockFailed) as caught:
        with lock.hold(tmp_path / "run", "--run_dir runs/x", "unused"):
            pass
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--run_dir runs/x cannot be locked: its file system")
    assert f"({kind} mounted at {mount})" in message and os.strerror(code) in message
    assert "Lustre: -o flock" in message and "local disk" in message
    assert not (tmp_path / "run").exists()  # the folder it made for the lock is gone again
    assert lock.holder(tmp_path) is None


def test_another_flock_error_is_not_mistaken_for_a_missing_flock(tmp_path, monkeypatch):
    monkeypatch.setattr(lock.fcntl, "flock", _no_flock(errno.EIO))
    with pytest.raises(OSError) as caught:
        with lock.hold(tmp_path / "run", "--run_dir runs/x", "unused"):
            pass
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, lock.LockFailed)


def test_the_file_system_is_found_by_the_longest_mount_point():
    kind, mount = lock.file_system("/proc/self")
    assert (kind, mount) == ("proc", "/proc") or not os.path.exists("/proc/self/mounts")


@pytest.mark.slow
def test_run_py_says_it_in_one_line_and_exit_2(tiny_folder, tmp_path):
    # run.py as a user runs it, with every flock failing as on a Lustre mount without -o flock.
    wrapper = textwrap.dedent(f"""
        import errno, fcntl, os, runpy, sys
        def flock(fd, operation):
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        fcntl.flock = flock
        sys.argv = ["run.py", *sys.argv[1:]]
        runpy.run_path({str(ROOT / "run.py")!r}, run_name="__main__")
        """)
    result = subprocess.run([sys.executable, "-c", wrapper, "--mode", "train", "--defense", "none", "--preset", "smoke",
                             "--dataset", f"folder:{tiny_folder}", "--data_dir", str(tmp_path / "tfds"),
                             "--run_dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"))
    assert_one_line_error(result, f"--run_dir {tmp_path / 'run'} cannot be locked: its file system",
                          "does not support flock", "-o flock")
    assert not (tmp_path / "run").exists()
