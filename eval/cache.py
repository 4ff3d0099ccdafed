"""The evaluation cache's files (``<run>/eval_cache/*.npz``), safe with several writers at once.

A study evaluates its runs in parallel processes, on one machine or many, and they share caches:
every evaluation with a black-box source reads (and, if missing, writes) the source's crafted
adversarials in the source's cache, and an evaluation by hand may run beside a study's. So:

- each write goes to a temporary file named for its writer (host, process, a random part), then
  is renamed over the entry: a reader sees the old entry or the new one whole, never half, and
  two writers of one entry never write into the same file (both computed the same thing; the
  last rename wins);
- a writer stopped mid-write removes its own temporary files and no one else's (another process
  may be writing its own at that moment); those of a process on this host that no longer exists
  (killed outright) are removed too, never another host's;
- a damaged entry (truncated, 8 bytes of junk, a member missing) reads as missing: one line says
  so, and the attack is computed again and the entry rewritten; never a traceback.

No TensorFlow here: the writers' test runs many processes at once.
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

import numpy as np

from training import lock, writes

TMP_PREFIX = "tmp-"
_HINT = "free space and give the same command: the attacks already cached are not run again"
# tmp-<host>~<pid>~<random>~<entry name>: "~" is in no host name, so the parts split back apart.
# (Files named tmp-<entry name>, without "~", are an older version's: left alone, one may be writing.)
_TMP_NAME = re.compile(r"^tmp-(?P<host>[^~]+)~(?P<pid>\d+)~[0-9a-f]+~.+$")


def temp_path(path: Path) -> Path:
    """This writer's own temporary file for the entry ``path``, beside it (the rename stays atomic)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}~{path.name}")


def write(path: Path, arrays: dict, what: str = "an attack's outcome") -> None:
    """``arrays`` as the entry ``path``, whole or not at all: free space checked first, a failed
    write (a full disk) one line with nothing left behind."""
    path = Path(path)
    tmp = temp_path(path)
    nbytes = sum(np.asarray(a).nbytes for a in arrays.values()) + 10_000
    with writes.guarded(path, what, nbytes, [tmp], _HINT):
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as out:  # a file object: np.savez would append ".npz" to a name
            np.savez(out, **arrays)
        os.replace(tmp, path)


def read(path: Path, keys=(), say=print) -> dict | None:
    """The entry's arrays (read into memory), or None when there is none, or when it is damaged or
    lacks one of ``keys``: then one line through ``say`` and the caller computes it again."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as entry:
            arrays = {name: entry[name] for name in entry.files}
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - bytes can fail numpy's parsing in many ways (a zeroed header:
        # tokenize.TokenError; a truncated zip: BadZipFile; a short member: ValueError): all mean "damaged"
        say(f"{path}: damaged cache entry ({_reason(err)}); recomputing it")
        return None
    missing = [k for k in keys if k not in arrays]
    if missing:
        say(f"{path}: damaged cache entry (no {', '.join(missing)}); recomputing it")
        return None
    return arrays


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__


def remove_partial_writes(folder: Path) -> None:
    """The temporary files this process left in ``folder`` (it was stopped mid-write), and those
    of processes on this host that are gone; never a live process's, nor another host's."""
    host, me = socket.gethostname(), os.getpid()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        found = _TMP_NAME.match(name)
        if found and found["host"] == host and (int(found["pid"]) == me or not lock.alive(int(found["pid"]))):
            Path(folder, name).unlink(missing_ok=True)

    return True
