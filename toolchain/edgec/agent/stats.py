"""Latency statistics from per-inference times, standard library only."""

import math


def percentile(sorted_values, q):
    """The q-th percentile (0-100) with linear interpolation between closest ranks.

    Matches numpy's default method, so numbers agree with host-side analysis.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * (q / 100.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def summarize(latencies_s):
    """min, median, mean, p90, p99, max and std (sample) in milliseconds, plus the count."""
    values = sorted(latencies_s)
    n = len(values)
    if n == 0:
        raise ValueError("no latencies to summarize")
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    ms = 1000.0
    return {
        "count": n,
        "min": values[0] * ms,
        "median": percentile(values, 50) * ms,
        "mean": mean * ms,
        "p90": percentile(values, 90) * ms,
        "p99": percentile(values, 99) * ms,
        "max": values[-1] * ms,
        "std": math.sqrt(var) * ms,
    }
