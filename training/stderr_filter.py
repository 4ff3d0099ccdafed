"""Drops one known, harmless TensorFlow message from the process's stderr and keeps the rest.

Every training and evaluation made TensorFlow's graph optimiser (grappler, C++) print

    E0000 ... meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply error:
    fanout 'gradient_tape/.../LeakyRelu/LeakyReluGrad' exist for missing node '...'

when it declines to fuse a LeakyReLU's gradient: the graph runs unfused and no result changes,
but an "E" line on every run teaches users to ignore errors. It is written by C++ straight to
file descriptor 2 while a step runs (not at import), so no Python logging setting reaches it and
TF_CPP_MIN_LOG_LEVEL=3 would hide every other TensorFlow error with it.

``install()`` points file descriptor 2 at a pipe read by a small forwarding process, which copies
every line to the real stderr except lines matching ``KNOWN_NOISE``. A process rather than a
thread: when TensorFlow aborts (a failed CHECK prints its reason, then calls abort()), the
forwarder still reads the reason out of the pipe and shows it, where a thread would die with the
process before it got the chance. At exit the real stderr is put back and the forwarder drains
what is left.
"""
from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

# The one message dropped: grappler's remapper giving up on a fusion (see the module docstring).
KNOWN_NOISE = (r"meta_optimizer\.cc:\d+\] remapper failed: INVALID_ARGUMENT",)

# Runs in the forwarding process: stdin (the pipe) to stderr (the real one), a line at a time
# (\n or \r ends one, so progress bars keep moving). A partial line is shown once nothing more has
# come for 0.2 s (a prompt, a line written in pieces). SIGINT and SIGTERM are ignored: Ctrl-C or a
# kill of the process group must leave it alive to show what the interrupted run prints as it
# saves; it ends when every writer has closed the pipe, the filtered process included.
_FORWARDER = r"""
import os, re, select, signal, sys
for number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(number, signal.SIG_IGN)
drop = re.compile("|".join(sys.argv[1:]).encode())

def show(piece):
    if drop.search(piece):
        return
    try:
        while piece:
            piece = piece[os.write(2, piece):]
    except OSError:
        pass  # the terminal went away: keep draining so that the writers never block

pending = b""
while True:
    if pending and not select.select([0], [], [], 0.2)[0]:
        show(pending)
        pending = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
    for line in lines:
        show(line)
if pending:
    show(pending)
"""

_installed: dict = {}


def install(patterns=KNOWN_NOISE) -> bool:
    """Filters file descriptor 2 for the rest of the process (idempotent); run.py calls it first
    thing, and a script using the Python API may too. Returns whether a filter is in place: not
    when ``sys.stderr`` is not file descriptor 2 (pytest's capsys, a notebook's stream, no stderr
    at all), so that output is never rerouted where this module cannot see where it goes."""
    if _installed:
        return True
    try:
        sys.stderr.flush()
        if sys.stderr.fileno() != 2:
            return False
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return False
    read_end, write_end = os.pipe()
    try:
        forwarder = subprocess.Popen([sys.executable, "-I", "-c", _FORWARDER, *patterns],
                                     stdin=read_end, stdout=subprocess.DEVNULL, stderr=real)
    except OSError:
        for fd in (read_end, write_end, real):
            os.close(fd)
        return False
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    _installed.update(real=real, forwarder=forwarder)
    atexit.register(uninstall)
    return True


def uninstall(timeout_s: float = 10.0) -> None:
    """Gives file descriptor 2 back to the real stderr and lets the forwarder show what it holds.
    The wait is bounded: a child process that inherited the pipe keeps it open, and the forwarder
    then goes on forwarding its lines after this process ends."""
    if not _installed:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    real, forwarder = _installed.pop("real"), _installed.pop("forwarder")
    os.dup2(real, 2)  # closes this process's last write end of the pipe
    os.close(real)
    try:
        forwarder.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def is_known_noise(line: str, patterns=KNOWN_NOISE) -> bool:
    """Whether ``install()``'s forwarder drops this line."""
    return re.search("|".join(patterns), line) is not None
