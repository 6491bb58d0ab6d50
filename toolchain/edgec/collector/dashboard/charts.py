"""The dashboard's charts as SVG, drawn by :mod:`edgec.plots` (the figures of ``edgec report
--plot``) and by :func:`edgec.search.report.plot` (the front of ``edgec search``), kept per
version of the record so that polling browsers do not redraw them."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi.responses import Response

from edgec import plots

KEEP = 32  # charts kept (a few per page and version)
REDRAW_S = 5.0  # a chart is redrawn at most this often, whatever the record does
# once no result has come for this long (seen by two polls this far apart); longer than the
# dashboard's hold of a streaming record's mark (REREAD_EVERY_S, 5 s, or longer when reads cost
# more: Dashboard.held_s), through which a version held between two reads would look like a pause
QUIET_S = 12.0
HELD_TIMES = 2.4  # a pause is at least this many holds long
MAX_LAG_S = 600.0  # or, while results stream in without a pause, once the chart is this old
DRAW_SHARE = 0.01  # and drawing takes at most this share of the time (one core)


class ChartCache:
    """A small LRU of rendered charts (thread-safe)."""

    def __init__(self, size: int = KEEP):
        self.size = size
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Throttle:
    """The version the pages name their charts by: the record's results', moved on once results
    pause (the same version seen :data:`QUIET_S` apart), or after :data:`MAX_LAG_S` while they
    stream in without a pause; never sooner than :data:`REDRAW_S` after the last move, nor than
    the last drawings took / :data:`DRAW_SHARE`; a pause is longer than :data:`HELD_TIMES`
    holds of the record's mark (``held``). Drawing both charts takes a few hundred ms of
    CPU: it waits for the agents to pause, so polling browsers cost the agents' API no figure
    while results stream in. A browser may keep a chart under its URL."""

    def __init__(self, every: float = REDRAW_S, share: float = DRAW_SHARE, quiet: float = QUIET_S,
                 lag: float = MAX_LAG_S, clock=time.monotonic, held=None):
        self.held = held  # the dashboard's hold of a streaming record's mark now (a function)
        self.every = every
        self.share = share
        self.quiet = quiet
        self.lag = lag
        self.clock = clock
        self.shown: str | None = None
        self._at = float("-inf")
        self._drawing_s = 0.0  # what drawing the charts of the version shown took
        self._seen: str | None = None  # the newest version seen, and since when
        self._seen_at = float("-inf")
        self._lock = threading.Lock()

    def version(self, record_version: str) -> str:
        with self._lock:
            now = self.clock()
            if record_version != self._seen:
                self._seen, self._seen_at = record_version, now
            wait = max(self.every, self._drawing_s / self.share)
            quiet = self.quiet if self.held is None else max(self.quiet, HELD_TIMES * self.held())
            paused = now - self._seen_at >= quiet or self.shown is None
            if (record_version != self.shown and now - self._at >= wait
                    and (paused or now - self._at >= self.lag)):
                self.shown, self._at, self._drawing_s = record_version, now, 0.0
            return self.shown

    def drew(self, seconds: float) -> None:
        with self._lock:
            self._drawing_s += seconds


def report_svg(rows: list[dict[str, Any]]) -> bytes:
    if not rows:
        return _empty("no results yet")
    return plots.report_chart(rows, "svg")


def history_svg(rows: list[dict[str, Any]]) -> bytes:
    return plots.history_chart(rows, "svg")


def search_svg(doc: dict[str, Any]) -> bytes:
    """The front plot of ``edgec search show --plot``, as SVG."""
    from edgec.search.report import plot

    with plots.drawing(), tempfile.TemporaryDirectory(prefix="edgec-chart-") as tmp:
        path = plot(doc, Path(tmp) / "front.svg")
        return path.read_bytes()


def _empty(text: str) -> bytes:
    from matplotlib.figure import Figure

    with plots.drawing():
        fig = Figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, text, ha="center", va="center", color="gray")
        return plots.render(fig, "svg")


def response(data: bytes) -> Response:
    # the URL names the record's version: a browser may keep it
    return Response(data, media_type="image/svg+xml", headers={"cache-control": "private, max-age=3600"})
