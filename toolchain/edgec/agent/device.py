"""What the device is (Jetson, Coral, Raspberry Pi, generic CPU) and the state that shapes a
measurement (CPU governor and clocks, temperatures, Jetson nvpmodel mode and jetson_clocks).

Every file is read through :class:`edgec.agent.fs.Root`, so tests run against fixture trees
that copy real devices' layouts.
"""

import os
import platform
import re
import shutil
import subprocess

from .fs import Root

# L4T release -> JetPack release, from NVIDIA's JetPack archive (release notes of each version).
L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.5.2": "4.5.1",
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}
L4T_MAJOR_TO_JETPACK = {"32": "4", "34": "5", "35": "5", "36": "6"}

# Coral USB Accelerator: Global Unichip id before the runtime loads its firmware, Google's after.
CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (firmware not loaded yet)",
                 ("18d1", "9302"): "Coral USB Accelerator (runtime firmware loaded)"}

_TEGRA_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)(?:.*?BOARD:\s*([\w-]+))?")


def parse_tegra_release(text):
    """``# R32 (release), REVISION: 7.1, ... BOARD: t210ref`` -> {"l4t": "32.7.1", ...}."""
    m = _TEGRA_RELEASE.search(text or "")
    if not m:
        return None
    major, revision, board = m.group(1), m.group(2), m.group(3)
    parts = revision.split(".")
    l4t = ".".join([major] + parts + ["0"] * (2 - len(parts)))
    return {
        "l4t": l4t,
        "jetpack": L4T_TO_JETPACK.get(l4t),
        "jetpack_major": L4T_MAJOR_TO_JETPACK.get(major),
        "board": board,
    }


def _read_cpuinfo(root):
    text = root.read("/proc/cpuinfo", "") or ""
    fields = {}
    processors = 0
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value)
    return fields, processors


def _compatible(root):
    raw = None
    try:
        with open(root.path("/proc/device-tree/compatible"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [c for c in raw.decode("utf-8", "replace").split("\x00") if c]


def _os_release(root):
    text = root.read("/etc/os-release") or root.read("/usr/lib/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def accelerators(root):
    """Edge TPUs (PCIe ``/dev/apex_N``, USB by vendor:product id) and NVIDIA dGPUs."""
    found = []
    for dev in root.glob("/dev/apex_*"):
        found.append({"kind": "edgetpu", "bus": "pcie", "path": dev})
    for dev_dir in root.glob("/sys/bus/usb/devices/*"):
        vendor = root.read(dev_dir + "/idVendor")
        product = root.read(dev_dir + "/idProduct")
        if (vendor, product) in CORAL_USB_IDS:
            found.append({"kind": "edgetpu", "bus": "usb", "usb_id": "%s:%s" % (vendor, product),
                          "path": dev_dir, "state": CORAL_USB_IDS[(vendor, product)]})
    for info in root.glob("/proc/driver/nvidia/gpus/*/information"):
        text = root.read(info, "") or ""
        m = re.search(r"^Model:\s*(.+)$", text, re.M)
        found.append({"kind": "nvidia-gpu", "bus": "pcie", "model": m.group(1).strip() if m else None,
                      "path": info})
    return found


def detect(root=None):
    """Describe the device: kind (jetson, coral-devboard, rpi, generic), model and details.

    Args:
        root: a :class:`Root` or directory (default: the running system).
    """
    root = root if isinstance(root, Root) else Root(root or "/")
    model = root.read("/proc/device-tree/model") or root.read("/sys/firmware/devicetree/base/model")
    compatible = _compatible(root)
    cpuinfo, processors = _read_cpuinfo(root)
    tegra = parse_tegra_release(root.read("/etc/nv_tegra_release"))
    accel = accelerators(root)
    info = {
        "kind": "generic",
        "model": model or cpuinfo.get("model name") or cpuinfo.get("Model") or cpuinfo.get("Hardware")
        or "unknown",
        "os": _os_release(root),
        "cpu": {
            "model": cpuinfo.get("model name") or cpuinfo.get("Model") or cpuinfo.get("Hardware"),
            "cores": processors or None,
            "arm_part": cpuinfo.get("CPU part"),
        },
        "accelerators": accel,
    }
    if compatible:
        info["compatible"] = compatible
    if root.is_live:
        info["machine"] = platform.machine()
        info["kernel"] = platform.release()
        info["hostname"] = platform.node()
        info["python"] = platform.python_version()
        info["cpu"]["cores"] = info["cpu"]["cores"] or os.cpu_count()
    lowered = (model or "").lower()
    if tegra or "jetson" in lowered or any(c.startswith("nvidia,tegra") for c in compatible):
        info["kind"] = "jetson"
        info["jetson"] = tegra or {"l4t": None, "jetpack": None, "jetpack_major": None, "board": None}
        soc = [c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")]
        info["jetson"]["soc"] = soc[0] if soc else None
    elif "phanbell" in lowered:
        info["kind"] = "coral-devboard"
    elif lowered.startswith("raspberry pi"):
        info["kind"] = "rpi"
        info["rpi"] = {"revision": cpuinfo.get("Revision")}
    return info


# ---------------------------------------------------------------- state that shapes a measurement

_GPU_DEVFREQ = re.compile(r"gpu|ga10b|gv11b|gp10b|gm20b", re.I)


def _cpus(root):
    cpus = []
    for cpu_dir in root.glob("/sys/devices/system/cpu/cpu[0-9]*"):
        index = int(re.search(r"(\d+)$", cpu_dir).group(1))
        online = root.read(cpu_dir + "/online")
        freq = cpu_dir + "/cpufreq/"
        cpus.append({
            "cpu": index,
            "online": online != "0",
            "governor": root.read(freq + "scaling_governor"),
            "cur_khz": root.read_int(freq + "scaling_cur_freq"),
            "min_khz": root.read_int(freq + "scaling_min_freq"),
            "max_khz": root.read_int(freq + "scaling_max_freq"),
            "hw_max_khz": root.read_int(freq + "cpuinfo_max_freq"),
        })
    return cpus


def _gpu_devfreq(root):
    gpus = []
    for dev in root.glob("/sys/class/devfreq/*"):
        name = dev.rsplit("/", 1)[1]
        if not _GPU_DEVFREQ.search(name):
            continue
        gpus.append({
            "name": name,
            "governor": root.read(dev + "/governor"),
            "cur_hz": root.read_int(dev + "/cur_freq"),
            "min_hz": root.read_int(dev + "/min_freq"),
            "max_hz": root.read_int(dev + "/max_freq"),
            "available_hz": [int(x) for x in (root.read(dev + "/available_frequencies") or "").split()
                             if x.isdigit()] or None,
        })
    return gpus


def temperatures(root):
    """Thermal zone temperatures in degrees C, keyed by zone type."""
    temps = {}
    for zone in root.glob("/sys/class/thermal/thermal_zone*"):
        raw = root.read_int(zone + "/temp")
        if raw is None:
            continue
        name = root.read(zone + "/type") or zone.rsplit("/", 1)[1]
        if name in temps:
            name = "%s (%s)" % (name, zone.rsplit("/", 1)[1])
        temps[name] = raw / 1000.0 if abs(raw) > 1000 else float(raw)
    return temps


def nvpmodel(root):
    """Jetson power mode: id from ``/var/lib/nvpmodel/status``, name from ``/etc/nvpmodel.conf``."""
    status = root.read("/var/lib/nvpmodel/status")
    mode_id = None
    source = None
    if status:
        m = re.search(r"pmode:\s*0*(\d+)", status)
        if m:
            mode_id, source = int(m.group(1)), "/var/lib/nvpmodel/status"
    conf = root.read("/etc/nvpmodel.conf") or ""
    names = dict((int(i), n) for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([\w.-]+)", conf))
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", conf)
    if mode_id is None and default:
        mode_id, source = int(default.group(1)), "/etc/nvpmodel.conf (default; no saved mode)"
    if mode_id is None and root.is_live and shutil.which("nvpmodel"):
        try:
            out = subprocess.check_output(["nvpmodel", "-q"], stderr=subprocess.STDOUT, timeout=5,
                                          universal_newlines=True)
            m = re.search(r"NV Power Mode:\s*(\S+)\s+(\d+)", out)
            if m:
                return {"id": int(m.group(2)), "name": m.group(1), "source": "nvpmodel -q"}
        except (OSError, subprocess.SubprocessError):
            pass
    if mode_id is None:
        return None
    return {"id": mode_id, "name": names.get(mode_id), "source": source}


def jetson_clocks(cpus, gpus):
    """Whether clocks are pinned at their maximum, which is what ``jetson_clocks`` does.

    Read from cpufreq/devfreq (min == max == hardware max), so no root is needed.
    """
    online = [c for c in cpus if c["online"] and c["min_khz"] is not None]
    if not online:
        return {"active": None, "basis": "no cpufreq information"}
    cpu_pinned = all(c["min_khz"] == c["max_khz"] and (c["hw_max_khz"] is None or c["max_khz"] == c["hw_max_khz"])
                     for c in online)
    gpu_known = [g for g in gpus if g["min_hz"] is not None and g["max_hz"] is not None]
    gpu_pinned = all(g["min_hz"] == g["max_hz"] for g in gpu_known)
    return {"active": bool(cpu_pinned and gpu_pinned),
            "basis": "cpufreq and GPU devfreq minimum == maximum" if gpu_known
            else "cpufreq minimum == maximum (no GPU devfreq found)"}


def state(root=None, jetson=False):
    """Governors, clocks, temperatures and (on a Jetson) nvpmodel mode and jetson_clocks."""
    root = root if isinstance(root, Root) else Root(root or "/")
    cpus = _cpus(root)
    gpus = _gpu_devfreq(root)
    out = {
        "governors": sorted(set(c["governor"] for c in cpus if c["governor"])),
        "cpus": cpus,
        "gpu_devfreq": gpus,
        "temperatures_c": temperatures(root),
        "loadavg": (root.read("/proc/loadavg") or "").split()[:3] or None,
    }
    if jetson:
        out["nvpmodel"] = nvpmodel(root)
        out["jetson_clocks"] = jetson_clocks(cpus, gpus)
    return out
