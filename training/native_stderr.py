"""The one place this tool touches file descriptor 2: what C and C++ libraries write there
(TensorFlow's runtime, libjpeg) held back while a block runs, then shown or dropped.

Python's ``sys.stderr`` cannot catch those lines: they are written straight to the descriptor.
Two blocks use it, each with its own rule for what is shown afterwards:

- run.py while TensorFlow loads: its start-up chatter (CUDA and oneDNN probes) is dropped, and
  shown if loading fails;
- data/sources.py while images decode: libjpeg's "Improper call to JPEG library in state 201" is
  dropped when decoding ends in the one-line DatasetError that names the file, and shown otherwise
  (its "Corrupt JPEG data" warnings for a file it could still decode).
- study/engines.py while it joins a Ray cluster: Ray's client prints a line per failed try, which
  the one-line refusal replaces (naming the cause: no cluster, or one that asks for a token).

Nothing is filtered line by line, and no process sits between this one and the terminal: outside
these blocks stderr is the terminal's, in order with stdout. TensorFlow's one message every run
used to print (grappler's "remapper failed") is prevented where it arises (models/leaky_relu.py).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def held_back(show=lambda error: True, into: dict | None = None):
    """Holds what is written to file descriptor 2 during the block; afterwards writes it to stderr
    if ``show(error)`` (``error``: the exception that ends the block, None when it ends normally),
    and puts it in ``into["text"]`` for a caller that words its own message from it. Where there
    is no file descriptor 2 to redirect, nothing is held."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 to redirect
        yield
        return
    error = None
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as err:
            error = err
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held = sink.read().decode(errors="replace")
            if into is not None:
                into["text"] = held
            if held and show(error):
                sys.stderr.write(held)
                sys.stderr.flush()
