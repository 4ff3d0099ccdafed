"""An evaluation a person can watch and stop.

``Progress``: inside every attack, a Keras progress bar with its ETA on a terminal, and in a log
file one line every few seconds (examples done, elapsed, ETA): the training loop's convention.

``stoppable``: Ctrl-C or SIGTERM stops the evaluation within seconds. Python runs a signal
handler only between bytecodes, and one batch of an iterative attack is a single compiled call
that can take minutes; so the signal is also written to a wake-up socket that a watcher thread
reads at once. The main thread gets a KeyboardInterrupt as soon as the call returns; if it has not
ended after a short grace period, the watcher removes the half-written temporary files and ends
the process. Every finished attack's outcome is already in the cache (each is written atomically
when it finishes), so the same command goes on from there.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time

import keras

EXIT_INTERRUPTED = 130
GRACE_SECONDS = 3.0
LOG_EVERY_SECONDS = 5.0


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


class Progress:
    """Progress of one attack over ``total`` examples; ``update(done)`` after each batch."""

    def __init__(self, total: int, label: str, out=None):
        self.total, self.label, self.out = total, label, out or sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.started = self.last = time.perf_counter()
        print(label, file=self.out, flush=True)
        self.bar = keras.utils.Progbar(total, verbose=1, unit_name="example") if self.tty else None

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < LOG_EVERY_SECONDS:
            return
        self.last = now
        elapsed = now - self.started
        eta = elapsed / done * (self.total - done) if done else float("nan")
        tail = f", ETA {duration(eta)}" if done < self.total else ""
        print(f"  {done}/{self.total} examples, {duration(elapsed)}{tail}", file=self.out, flush=True)


def interrupted(error: BaseException) -> bool:
    """Whether ``error`` is, or was caused by, a KeyboardInterrupt (Ctrl-C or the SIGTERM handler)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def stoppable(cleanup=lambda: None, grace: float = GRACE_SECONDS, what: str = "evaluation"):
    """Makes the block stop within about ``grace`` seconds of SIGINT or SIGTERM (see the module
    docstring); ``cleanup`` removes what a hard stop would leave half-written. Only in the main
    thread (elsewhere signals cannot be handled): there it is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done = threading.Event()
    said = threading.Lock()

    def announce():  # once, by whichever sees the signal first: the watcher or the interrupted main thread
        if said.acquire(blocking=False):
            print(f"\nstopping the {what}: every finished attack is kept in the cache; give the same command "
                  "to go on from there", file=sys.stderr, flush=True)

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch():
        while not done.is_set():
            ready, _, _ = select.select([reader], [], [], 0.5)
            if not ready or done.is_set():
                continue
            received = {int(b) for b in reader.recv(64)}
            if not received & {int(signal.SIGINT), int(signal.SIGTERM)}:
                continue
            announce()
            if done.wait(grace):
                return
            cleanup()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    watcher = threading.Thread(target=watch, name="stop-watcher", daemon=True)
    watcher.start()
    try:
        yield
    except KeyboardInterrupt:
        announce()
        raise
    except Exception as error:
        # The handler's KeyboardInterrupt can land inside a C call (NumPy's __array__ while a batch
        # becomes a tensor), which Python reports as a SystemError caused by it: still a stop.
        if not interrupted(error):
            raise
        announce()
        raise KeyboardInterrupt from error
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        watcher.join(timeout=1.0)
        reader.close()
        writer.close()
