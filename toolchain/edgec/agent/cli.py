"""The agent's command line (argparse; the zipapp's entry point).

    python3 edgec-agent.pyz bench ARTIFACT [--runtime auto|litert|tflite|edgetpu|tensorrt|onnxruntime]
        [--threads N] [--warmup N] [--runs N | --min-seconds S] [--json] ...
    python3 edgec-agent.pyz detect [--json]
    python3 edgec-agent.pyz version
    python3 edgec-agent.pyz run --server URL (--enroll-token-file FILE | --token-file FILE) [--profile ID]

Errors are one ``Error: ...`` line on stderr; exit 2 for bad input, 3 for an absent runtime.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading

from . import __version__
from .errors import AgentError
from .vocab import RUNTIME_CHOICES, SENSOR_CHOICES


def _parser():
    parser = argparse.ArgumentParser(prog="edgec-agent", description="edgec device agent: latency and power "
                                     "of a model measured where it runs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command")

    bench = sub.add_parser("bench", help="measure an artifact's latency (and power when a sensor exists)")
    bench.add_argument("artifact", help=".tflite, .onnx, .engine/.plan, or an edgec TensorRT bundle directory")
    bench.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                       help="runtime (default: from the artifact; .tflite with an Edge TPU op -> edgetpu)")
    bench.add_argument("--threads", type=int, help="CPU threads for the runtime (default: the runtime's)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed inferences after the cold one (default 10)")
    count = bench.add_mutually_exclusive_group()
    count.add_argument("--runs", type=int, help="timed inferences")
    count.add_argument("--min-seconds", type=float, help="time inferences for at least S seconds (default 2)")
    bench.add_argument("--batch", type=int, default=1, help="batch size (models with a dynamic batch axis)")
    bench.add_argument("--input", help="sample inputs: .npy, or .npz with x / one array per input name")
    bench.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    bench.add_argument("--power", default="auto", choices=SENSOR_CHOICES, help="power sensor (default: auto)")
    bench.add_argument("--power-command", help="external command printing watts, one number per line")
    bench.add_argument("--power-rail", help="rail to report as the total (default: the module input, else the sum)")
    bench.add_argument("--tegrastats", help="path of tegrastats (default: from PATH)")
    bench.add_argument("--idle-seconds", type=float, default=1.0, help="idle power window before loading (default 1)")
    bench.add_argument("--power-min-seconds", type=float, default=1.0,
                       help="with a power sensor, the timed window lasts at least this long (default 1)")
    bench.add_argument("--expect-sha256", help="refuse to run unless the artifact has this sha256")
    bench.add_argument("--edgetpu-device", help="Edge TPU to use, e.g. usb:0 or pci:0")
    bench.add_argument("--root", default="/", help=argparse.SUPPRESS)
    bench.add_argument("--json", action="store_true", help="print the report document as JSON")
    bench.add_argument("--out", help="also write the report document (JSON) to this file")

    detect = sub.add_parser("detect", help="describe the device, its state and its power sensor")
    detect.add_argument("--root", default="/", help=argparse.SUPPRESS)
    detect.add_argument("--power-command", help="external command printing watts")
    detect.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("version", help="print the agent and report schema versions")

    run = sub.add_parser("run", help="serve a fleet collector (edgec serve): take jobs, report results",
                         description="Register this device with the collector, long-poll for jobs it can run, "
                         "download their artifacts by sha256 (verified before running), measure them and post the "
                         "reports; reconnects with backoff when the collector is away. Stops on SIGTERM/SIGINT.")
    run.add_argument("--server", required=True, help="the collector's URL, e.g. http://host:8750")
    run.add_argument("--token", help="the collector's token (visible to other users in ps: prefer --token-file "
                     "or EDGEC_TOKEN)")
    run.add_argument("--token-file", help="file holding the collector's token")
    run.add_argument("--enroll-token", help="one-time enrollment token from 'edgec devices enroll NAME' (visible in "
                     "ps: prefer --enroll-token-file); traded for this device's own credential on the first start")
    run.add_argument("--enroll-token-file", help="file holding the enrollment token")
    run.add_argument("--credential-file", help="where this device's credential is kept (mode 0600; default "
                     "~/.config/edgec-agent/NAME.credential)")
    run.add_argument("--name", help="this device's id at the collector (default: the host name)")
    run.add_argument("--profile", help="edgec profile id of this device (default: detected when obvious)")
    run.add_argument("--labels", help="labels jobs may require: k=v,k2=v2")
    run.add_argument("--work-dir", help="job directories and unsent results (default ~/.cache/edgec-agent/run/NAME)")
    run.add_argument("--wait", type=float, default=20.0, help="seconds of one long poll for a job (default 20)")
    run.add_argument("--max-jobs", type=int, help="stop after this many jobs")
    run.add_argument("--power-command", help="this device's external power meter command (watts, one per line)")
    run.add_argument("--cafile", help="CA certificate (PEM) to verify an https:// collector against")
    run.add_argument("--root", default="/", help=argparse.SUPPRESS)
    return parser


def _bench(args):
    from .bench import run_benchmark

    keys = ("runtime", "threads", "warmup", "runs", "min_seconds", "batch", "input", "seed", "power",
            "power_command", "power_rail", "tegrastats", "idle_seconds", "power_min_seconds", "expect_sha256",
            "edgetpu_device", "root")
    doc = run_benchmark(args.artifact, dict((k, getattr(args, k)) for k in keys))
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.rename(tmp, args.out)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    else:
        sys.stdout.write(format_report(doc))


def format_report(doc):
    """A short human-readable summary of a report."""
    lat, rt, dev = doc["latency_ms"], doc["runtime"], doc["device"]
    lines = [
        "%s (%s, %s bytes) on %s [%s]" % (doc["artifact"]["file"], doc["artifact"]["format"],
                                          doc["artifact"]["bytes"], dev["model"], dev["kind"]),
        "runtime: %s %s%s, threads %s" % (rt["name"], rt["version"] or "",
                                          " (%s)" % rt["delegate"] if rt["delegate"] else "", rt["threads"] or "default"),
        "load %.2f ms, cold first inference %.3f ms" % (doc["timings_ms"]["load"],
                                                        doc["timings_ms"]["cold_first_inference"]),
        "latency over %d runs (ms): min %.4f  median %.4f  mean %.4f  p90 %.4f  p99 %.4f  max %.4f  std %.4f"
        % (lat["count"], lat["min"], lat["median"], lat["mean"], lat["p90"], lat["p99"], lat["max"], lat["std"]),
        "throughput: %.1f inferences/s (batch %d)" % (doc["throughput"]["inferences_per_s"], doc["throughput"]["batch"]),
    ]
    p = doc["power"]
    if p["available"]:
        e = p["energy_mj_per_inference"]
        lines.append("power (%s, %s, total %s): idle %s W, active %.3f W, peak %.3f W; %.4f mJ/inference (%s above idle); "
                     "%d samples at %.0f Hz" % (p["sensor"], p["scope"], p["total_rail"] or "sum of rails",
                                                "%.3f" % p["idle_w"] if p["idle_w"] is not None else "-",
                                                p["active_w"], p["peak_w"], e["total"],
                                                "%.4f" % e["above_idle"] if e["above_idle"] is not None else "-",
                                                p["samples"]["total"], p["rate_hz"]))
    else:
        lines.append("power: unavailable (%s)" % p["reason"])
    for w in doc["warnings"]:
        lines.append("warning: " + w)
    return "\n".join(lines) + "\n"


def _detect(args):
    from . import device, sensors
    from .errors import Unavailable
    from .fs import Root

    root = Root(args.root)
    info = device.detect(root)
    out = {"agent_version": __version__, "device": info, "system": device.state(root, jetson=info["kind"] == "jetson")}
    try:
        sensor = sensors.open_sensor("auto", root, command=args.power_command)
        out["power"] = dict(sensor.describe(), available=True, reading=sensor.read() if not sensor.streaming else None)
        sensor.close()
    except Unavailable as exc:
        out["power"] = {"available": False, "reason": str(exc)}
    if args.json:
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        sys.stdout.write("%s [%s]\n" % (info["model"], info["kind"]))
        if info.get("jetson"):
            sys.stdout.write("L4T %s, JetPack %s\n" % (info["jetson"]["l4t"], info["jetson"]["jetpack"]))
        for acc in info["accelerators"]:
            sys.stdout.write("accelerator: %s\n" % json.dumps(acc))
        p = out["power"]
        sys.stdout.write("power: %s\n" % ("%s (%s), rails %s" % (p["sensor"], p["scope"], ", ".join(p["rails"]))
                                          if p["available"] else "unavailable (%s)" % p["reason"]))


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":  # a daemon says what it does, with the time
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "bench":
            _bench(args)
        elif args.command == "detect":
            _detect(args)
        elif args.command == "run":
            from . import run

            if args.wait < 0 or args.wait > 60:
                raise AgentError("--wait must be between 0 and 60 seconds, got %g" % args.wait)
            if args.max_jobs is not None and args.max_jobs < 1:
                raise AgentError("--max-jobs must be >= 1, got %d" % args.max_jobs)
            return run.main(args)
        elif args.command == "version":
            from .schema import SCHEMA_VERSION
            sys.stdout.write("edgec-agent %s (report schema %d, Python %s)\n"
                             % (__version__, SCHEMA_VERSION, sys.version.split()[0]))
        return 0
    except AgentError as exc:
        sys.stderr.write("Error: %s\n" % exc)
        return exc.exit_code
    except KeyboardInterrupt:
        # handled: in the agent program (not a caller's process), a further Ctrl-C while it winds
        # down is ignored (at the C level, which Python's finalization keeps), so exit code 130
        # cannot become a death by SIGINT
        if argv is None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("Error: interrupted\n")
        return 130
