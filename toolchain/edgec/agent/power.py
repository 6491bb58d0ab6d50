"""Sampling a power sensor in a background thread, and turning samples into the report's
idle / active power and energy per inference.

The bench marks two windows on the same clock as the samples (``time.perf_counter``): *idle*
(the device at rest before the model loads) and *active* (the timed inference loop). Energy per
inference is the active window's mean power times its length over the inferences it ran;
*above idle* subtracts the idle power first.
"""

import threading
import time


class PowerMonitor:
    """Reads ``sensor`` as fast as it allows in a daemon thread; ``samples`` are (t, {rail: value})."""

    def __init__(self, sensor, clock=time.perf_counter):
        self.sensor = sensor
        self.clock = clock
        self.samples = []
        self.error = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="edgec-power", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        append = self.samples.append
        clock = self.clock
        try:
            for values in self.sensor.stream(self._stop):
                append((clock(), values))
                if self._stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - reported in the document, never raised in the bench
            self.error = "%s: %s" % (type(exc).__name__, exc)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            if self.sensor.streaming:
                self.sensor.close()  # ends the child process the thread is blocked reading
                self._thread.join(5.0)
            else:
                self._thread.join(5.0)  # at most one sampling interval
                self.sensor.close()  # only now: the thread may be reading its descriptors
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def series(self):
        """[(t, total watts, {rail: watts})] with counters turned into power between readings."""
        return to_power(self.samples, self.sensor.counter, self.sensor.total_rail, self.sensor.wrap_j)


def to_power(samples, counter=False, total_rail=None, wrap_j=None):
    """Samples -> power series; counter readings (joules) become mean power between readings."""
    wrap_j = wrap_j or {}
    out = []
    if counter:
        for (t0, e0), (t1, e1) in zip(samples, samples[1:]):
            dt = t1 - t0
            if dt <= 0:
                continue
            rails = {}
            for rail in e1:
                if rail not in e0:
                    continue
                de = e1[rail] - e0[rail]
                if de < 0:  # the counter wrapped
                    de += wrap_j.get(rail, 0.0)
                rails[rail] = de / dt
            out.append(((t0 + t1) / 2.0, _total(rails, total_rail), rails))
    else:
        for t, rails in samples:
            out.append((t, _total(rails, total_rail), rails))
    return out


def _total(rails, total_rail):
    if total_rail is not None:
        return rails.get(total_rail, 0.0)
    return sum(rails.values())


def window_mean(series, start, end, index=1):
    """Time-weighted mean of the series inside [start, end]; None without samples there."""
    pts = [(p[0], p[index]) for p in series if start <= p[0] <= end]
    if not pts:
        return None, 0
    if len(pts) == 1 or pts[-1][0] <= pts[0][0]:
        return sum(v for _, v in pts) / len(pts), len(pts)
    area = 0.0
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        area += (v0 + v1) / 2.0 * (t1 - t0)
    return area / (pts[-1][0] - pts[0][0]), len(pts)


def _rail_means(series, start, end):
    rails = sorted(set(r for p in series for r in p[2]))
    out = {}
    for rail in rails:
        pts = [(p[0], p[2][rail]) for p in series if rail in p[2]]
        mean, _ = window_mean(pts, start, end)
        if mean is not None:
            out[rail] = mean
    return out


def summarize(sensor_info, series, idle, active, inferences, error=None):
    """The report's ``power`` object.

    Args:
        sensor_info: ``Sensor.describe()``.
        series: :func:`to_power` output.
        idle: (start, end) of the idle window, or None when none was taken.
        active: (start, end) of the timed inference loop.
        inferences: inferences run in the active window (runs x batch).
        error: the sampling thread's error, if any.
    """
    if error and not series:
        return {"available": False, "reason": "%s failed while sampling: %s" % (sensor_info["sensor"], error)}
    active_w, n_active = window_mean(series, active[0], active[1])
    if active_w is None:
        return {"available": False,
                "reason": "%s gave no sample during the %.3f s timed window (sensor too slow for this run; "
                          "use --min-seconds)" % (sensor_info["sensor"], active[1] - active[0])}
    idle_w, n_idle = window_mean(series, idle[0], idle[1]) if idle else (None, 0)
    active_s = active[1] - active[0]
    inside = [p[1] for p in series if active[0] <= p[0] <= active[1]]
    mean_w, _ = window_mean(series, series[0][0], series[-1][0])
    span = series[-1][0] - series[0][0]
    energy_total = active_w * active_s / inferences * 1000.0
    above_idle = (active_w - idle_w) * active_s / inferences * 1000.0 if idle_w is not None else None
    doc = dict(sensor_info)
    doc.update({
        "available": True,
        "idle_w": idle_w,
        "active_w": active_w,
        "mean_w": mean_w,
        "peak_w": max(inside),
        "energy_mj_per_inference": {"total": energy_total,
                                    "above_idle": above_idle},
        "rails_w": {"idle": _rail_means(series, idle[0], idle[1]) if idle else {},
                    "active": _rail_means(series, active[0], active[1])},
        "samples": {"idle": n_idle, "active": n_active, "total": len(series)},
        "rate_hz": round((len(series) - 1) / span, 2) if span > 0 else 0.0,
        "windows_s": {"idle": round(idle[1] - idle[0], 4) if idle else 0.0, "active": round(active_s, 4)},
    })
    if error:
        doc["error"] = error
    return doc
