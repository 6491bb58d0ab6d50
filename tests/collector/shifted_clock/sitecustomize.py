"""Loaded by a collector process started with this directory on PYTHONPATH: its wall clock
(``time.time``) runs ``EDGEC_TEST_CLOCK_SHIFT`` seconds ahead, and each SIGUSR1 steps it by
``EDGEC_TEST_CLOCK_STEP`` more (an NTP correction while it runs). The monotonic clock is left alone,
as a real clock step leaves it."""

import os
import signal
import time

_real = time.time
_shift = [float(os.environ.get("EDGEC_TEST_CLOCK_SHIFT", "0"))]
_step = float(os.environ.get("EDGEC_TEST_CLOCK_STEP", "0"))


def _shifted() -> float:
    return _real() + _shift[0]


def _stepped(signum, frame) -> None:
    _shift[0] += _step


time.time = _shifted
if _step:
    signal.signal(signal.SIGUSR1, _stepped)
