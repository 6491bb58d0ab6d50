"""What the device can run, as the agent tells its collector: the runtimes this Python can import
(and their versions), the device profile it looks like, its labels and its power sensor.

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import os
import sys

from .errors import AgentError
from .vocab import parse_labels as _parse_labels


def _distribution_version(*names):
    for name in names:
        try:
            if sys.version_info >= (3, 8):
                from importlib import metadata

                return metadata.version(name)
            import pkg_resources

            return pkg_resources.get_distribution(name).version
        except Exception:  # noqa: BLE001 - metadata absent or unreadable: version unknown
            continue
    return None


def _importable(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def detect_runtimes():
    """Runtime name -> version (None when unknown) of the runtimes this Python can import.

    Found without importing them (``importlib.util.find_spec`` and package metadata), so it is
    fast and has no side effects on accelerators.
    """
    found = {}
    litert = _importable("ai_edge_litert")
    tflite = _importable("tflite_runtime")
    if litert:
        found["litert"] = _distribution_version("ai-edge-litert")
    if tflite:
        found["tflite"] = _distribution_version("tflite-runtime", "tflite_runtime")
        found.setdefault("litert", found["tflite"])
    if (litert or tflite) and _edgetpu_library():
        found["edgetpu"] = _distribution_version("pycoral")
    if _importable("onnxruntime"):
        found["onnxruntime"] = _distribution_version("onnxruntime", "onnxruntime-gpu")
    if _importable("tensorrt"):
        found["tensorrt"] = _distribution_version("tensorrt", "tensorrt-libs")
    return found


def _edgetpu_library():
    import ctypes.util
    import platform

    name = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(platform.system())
    if not name:
        return None
    for directory in ("/usr/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                      "/usr/lib/arm-linux-gnueabihf", "/usr/local/lib"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return ctypes.util.find_library("edgetpu")


def guess_profile(info):
    """The edgec device profile id of a detected device, or None when it is not obvious."""
    model = (info.get("model") or "").lower()
    kind = info.get("kind")
    if kind == "jetson":
        for needle, profile in (("orin nano", "jetson-orin-nano"), ("agx orin", "jetson-agx-orin"),
                                ("xavier nx", "jetson-xavier-nx"), ("nano", "jetson-nano")):
            if needle in model:
                return profile
        return None
    if kind == "coral-devboard":
        return "coral-devboard"
    if kind == "rpi":
        for needle, profile in (("raspberry pi 5", "rpi5"), ("raspberry pi 4", "rpi4")):
            if needle in model:
                return profile
        return None
    if any(a.get("kind") == "edgetpu" and a.get("bus") == "usb" for a in info.get("accelerators") or []):
        return "coral-usb"
    if info.get("machine") in ("x86_64", "AMD64"):
        return "x86-cpu"
    return None


def parse_labels(text):
    """``k=v,k2=v2`` -> dict (:func:`edgec.agent.vocab.parse_labels`).

    Raises:
        AgentError: a malformed pair or key.
    """
    try:
        return _parse_labels(text)
    except ValueError as exc:
        raise AgentError(str(exc)) from None


def power_summary(root, command=None):
    """The power sensor this device would use (or why there is none)."""
    from . import sensors
    from .errors import Unavailable

    try:
        sensor = sensors.open_sensor("auto", root, command=command)
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    try:
        info = sensor.describe()
        return {"available": True, "sensor": info.get("sensor"), "scope": info.get("scope"),
                "rails": info.get("rails"), "total_rail": info.get("total_rail")}
    finally:
        sensor.close()
