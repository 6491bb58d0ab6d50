"""The benchmark core: artifact path + options -> report document (see :mod:`.schema`).

Method:
1. power: open the sensor (or record why there is none) and sample an *idle* window before
   anything loads;
2. load the artifact (timed), set the inputs (random in each input's quantized range, or a
   sample file), and time the *cold* first inference on its own;
3. warm up, then the *timed* loop: ``--runs N`` inferences, or as many as fit in
   ``--min-seconds S``. Each iteration is ``invoke()`` followed by one clock read; latency i is
   the difference of consecutive clock reads, so the loop adds one clock read and one list
   store per inference to a bare ``invoke()`` loop (``bench/bench_agent.py`` measures it);
4. statistics (min, median, mean, p90, p99, max, std, throughput), the device and what shapes
   the number (governors, clocks, temperatures before and after, nvpmodel, jetson_clocks).

:func:`run_benchmark` is what the command line, ``edgec profile`` and a fleet daemon call.
"""

import gc
import logging
import os
import time

from . import __version__, device, power, schema, sensors, stats
from . import runtimes as runtime_registry
from .errors import AgentError, Unavailable
from .fs import Root, sha256_file

log = logging.getLogger(__name__)

DEFAULTS = {
    "runtime": "auto",
    "threads": None,
    "warmup": 10,
    "runs": None,
    "min_seconds": None,
    "batch": 1,
    "input": None,
    "seed": 0,
    "power": "auto",
    "power_command": None,
    "power_rail": None,
    "tegrastats": None,
    "idle_seconds": 1.0,
    "power_min_seconds": 1.0,
    "expect_sha256": None,
    "edgetpu_device": None,
    "providers": None,
    "root": "/",
}
DEFAULT_MIN_SECONDS = 2.0
MIN_RUNS = 10
BLOCK_SECONDS = 0.25  # with --min-seconds, the clock is checked between blocks this long


def options_from(options=None, **overrides):
    """A full options dict from defaults, ``options`` and keyword overrides.

    Raises:
        AgentError: unknown option names or values out of range.
    """
    merged = dict(DEFAULTS)
    for source in (options or {}, overrides):
        unknown = sorted(set(source) - set(DEFAULTS))
        if unknown:
            raise AgentError("unknown bench options %s; valid: %s" % (", ".join(unknown), ", ".join(sorted(DEFAULTS))))
        merged.update((k, v) for k, v in source.items() if v is not None)
    if merged["runs"] is not None and merged["min_seconds"] is not None:
        raise AgentError("give --runs or --min-seconds, not both")
    if merged["runs"] is None and merged["min_seconds"] is None:
        merged["min_seconds"] = DEFAULT_MIN_SECONDS
    for key, low in (("runs", 1), ("warmup", 0), ("batch", 1), ("threads", 1)):
        value = merged[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise AgentError("--%s must be an integer >= %d, got %r" % (key.replace("_", "-"), low, value))
    for key in ("min_seconds", "idle_seconds", "power_min_seconds"):
        value = merged[key]
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise AgentError("--%s must be a number >= 0, got %r" % (key.replace("_", "-"), value))
    return merged


def describe_artifact(path, fmt, expect_sha256=None):
    """path, file, sha256, bytes and format; a bundle is described by its ONNX file."""
    target = path
    if fmt == "tensorrt-bundle":
        from .runtimes.tensorrt import read_bundle

        target = read_bundle(path)["onnx_path"]
    digest = sha256_file(target)
    if expect_sha256 and digest != expect_sha256.lower():
        raise AgentError("artifact %s has sha256 %s, expected %s: it was modified or copied incompletely"
                         % (target, digest, expect_sha256))
    return {"path": os.path.abspath(path), "file": os.path.basename(os.path.normpath(path)), "sha256": digest,
            "bytes": os.path.getsize(target), "format": fmt}


def timed_block(invoke, n, clock):
    """n back-to-back inferences; returns the n + 1 clock readings around them.

    The loop adds one clock read and one list store per inference to a bare ``invoke()`` loop
    (about 60 ns on a 3 GHz x86 core; ``bench/bench_agent.py`` measures it). A plain Python
    loop: runtimes' ``invoke`` are Python methods, which CPython calls fastest from Python code
    (calling them from C, e.g. through ``itertools.starmap``, costs more).
    """
    stamps = [0.0] * (n + 1)
    stamps[0] = clock()
    for i in range(1, n + 1):
        invoke()
        stamps[i] = clock()
    return stamps


def timed_loop(invoke, runs, min_seconds, clock, estimate_s):
    """Latencies (s) of ``runs`` inferences, or of as many as fill ``min_seconds``.

    Returns:
        (latencies, start, end): ``start`` is the clock before the first inference and ``end``
        the clock after the last one; latencies are computed after ``end``.
    """
    blocks = []
    done = 0
    while True:
        remaining = (runs or 0) - done
        elapsed = blocks[-1][-1] - blocks[0][0] if blocks else 0.0
        time_left = (min_seconds or 0) - elapsed
        if remaining <= 0 and time_left <= 0 and blocks:
            break
        n = max(remaining, 1)
        if time_left > 0:
            n = max(n, int(min(time_left, BLOCK_SECONDS) / max(estimate_s, 1e-7)) + 1)
        blocks.append(timed_block(invoke, n, clock))
        done += n
    start, end = blocks[0][0], blocks[-1][-1]
    latencies = []
    for stamps in blocks:
        latencies.extend(b - a for a, b in zip(stamps, stamps[1:]))
    return latencies, start, end


def _utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_benchmark(artifact, options=None, **overrides):
    """Measure one artifact on this device.

    Args:
        artifact: path of a .tflite, .onnx, .engine/.plan file or an edgec TensorRT bundle.
        options: dict of :data:`DEFAULTS` keys; ``overrides`` take precedence.

    Returns:
        The report document (checked against :mod:`.schema`).

    Raises:
        AgentError: bad input; Unavailable: the runtime (or delegate) is absent.
    """
    opts = options_from(options, **overrides)
    if not os.path.exists(artifact):
        raise AgentError("artifact '%s' does not exist" % artifact)
    fmt = runtime_registry.artifact_format(artifact)
    runtime_name = runtime_registry.choose(opts["runtime"], artifact, fmt)
    art = describe_artifact(artifact, fmt, opts["expect_sha256"])
    root = Root(opts["root"])
    clock = time.perf_counter
    warnings = []

    dev = device.detect(root)
    before = device.state(root, jetson=dev["kind"] == "jetson")

    sensor, power_doc = None, None
    try:
        sensor = sensors.open_sensor(opts["power"], root, command=opts["power_command"], rail=opts["power_rail"],
                                     tegrastats=opts["tegrastats"])
    except Unavailable as exc:
        power_doc = {"available": False, "reason": str(exc)}
    monitor = power.PowerMonitor(sensor, clock) if sensor else None
    rt = runtime_registry.create(runtime_name, artifact, threads=opts["threads"], batch=opts["batch"],
                                 edgetpu_device=opts["edgetpu_device"], providers=opts["providers"])
    idle = None
    try:
        if monitor:
            monitor.start()
            t0 = clock()
            time.sleep(opts["idle_seconds"])
            idle = (t0, clock()) if opts["idle_seconds"] > 0 else None
        t0 = clock()
        rt.load()
        load_s = clock() - t0
        from .runtimes.inputs import make_inputs

        arrays, inputs = make_inputs(rt.input_specs(), opts["input"], opts["seed"])
        rt.set_inputs(arrays)
        invoke = rt.invoke
        t0 = clock()
        invoke()
        cold_s = clock() - t0
        warm = timed_block(invoke, opts["warmup"], clock)
        warm_lat = [b - a for a, b in zip(warm, warm[1:])]
        estimate = sorted(warm_lat)[len(warm_lat) // 2] if warm_lat else cold_s

        runs, min_seconds = opts["runs"], opts["min_seconds"]
        if min_seconds is not None and runs is None:
            runs = MIN_RUNS
        if monitor and opts["power_min_seconds"] > (min_seconds or 0):
            min_seconds = opts["power_min_seconds"]
            if opts["runs"] is not None and opts["runs"] * estimate < min_seconds:
                warnings.append("the timed window runs for at least %.1f s so the power sensor covers it "
                                "(more than --runs %d)" % (min_seconds, opts["runs"]))
        was_enabled = gc.isenabled()
        gc.disable()  # a collection inside the loop would be charged to one inference
        try:
            latencies, start, end = timed_loop(invoke, runs, min_seconds, clock, estimate)
        finally:
            if was_enabled:
                gc.enable()
    finally:
        if monitor:
            monitor.stop()
        rt.close()
    warnings.extend(rt.warnings)
    if runtime_name == "edgetpu" and not runtime_registry.is_edgetpu_model(artifact):
        warnings.append("the model has no edgetpu-custom-op: it runs entirely on the CPU")

    inferences = len(latencies) * opts["batch"]
    if monitor:
        power_doc = power.summarize(sensor.describe(), monitor.series(), idle, (start, end), inferences,
                                    monitor.error)
    after = device.state(root, jetson=dev["kind"] == "jetson")
    timed_s = end - start
    doc = {
        "schema_version": schema.SCHEMA_VERSION,
        "kind": schema.KIND,
        "agent_version": __version__,
        "created": _utc_now(),
        "artifact": art,
        "runtime": rt.info(),
        "device": dev,
        "system": {"before": before, "after": after},
        "options": dict((k, v) for k, v in opts.items() if k != "root"),
        "inputs": inputs,
        "timings_ms": {"load": load_s * 1000.0, "cold_first_inference": cold_s * 1000.0},
        "latency_ms": stats.summarize(latencies),
        "throughput": {"inferences_per_s": inferences / timed_s if timed_s > 0 else 0.0,
                       "batch": opts["batch"], "runs": len(latencies), "timed_s": timed_s},
        "power": power_doc,
        "warnings": warnings,
    }
    return schema.check(doc)
