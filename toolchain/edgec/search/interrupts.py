"""Ctrl-C in a search: prompt where it is safe, never lost, never inside Optuna's bookkeeping.

A KeyboardInterrupt raised while Optuna records a trial's result leaves its ``_run_trial`` with an
unbound local (an internal error instead of a stop), and Python drops one raised while it runs a
finalizer or a weakref callback ("Exception ignored in ..."), which TensorFlow and SQLAlchemy run
often. So during a search SIGINT is remembered first; it raises at once only inside
:func:`immediate` (a trial's own work: building, measuring, the baselines), and
:func:`checkpoint` raises a remembered one at the next step of the trial or before the next one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()
_immediate = threading.Event()


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """Handle SIGINT as above for the duration (main thread only, and only where SIGINT has
    Python's default handler: nested uses and embedding applications keep theirs)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        _requested.set()
        if _immediate.is_set():
            raise KeyboardInterrupt

    _requested.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _requested.clear()
        _immediate.clear()


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """A region where Ctrl-C raises KeyboardInterrupt at once (one that came before raises here)."""
    checkpoint()
    _immediate.set()
    try:
        yield
    finally:
        _immediate.clear()


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came and has not stopped the search yet."""
    if _requested.is_set():
        raise KeyboardInterrupt
