"""Power sensors: each one reads real watts (or a real energy counter) or says why it cannot.

=============  ==========================================================================  ==========
sensor         source                                                                      unit
=============  ==========================================================================  ==========
ina3221        Jetson JetPack 5/6 hwmon: ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/``  mV x mA
               ``inN_label``, ``inN_input`` (bus mV), ``currN_input`` (mA)
ina3221x       Jetson JetPack 4 iio: ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/``      mW
               ``rail_name_N``, ``in_powerN_input``
tegrastats     ``tegrastats --interval MS`` lines: ``POM_5V_IN 1294/1294`` (JetPack 4),    mW
               ``VDD_IN 4968mW/4968mW`` (JetPack 5/6); current value before the slash
nvml           ``libnvidia-ml.so.1`` via ctypes: total energy counter (Volta+) or power     mJ / mW
nvidia-smi     ``nvidia-smi --query-gpu=power.draw -lms N`` when NVML cannot be loaded      W
rapl           ``/sys/class/powercap/intel-rapl:N/energy_uj`` (package zones only)          uJ counter
hwmon          ``/sys/class/hwmon/hwmon*/power*_input`` (or ``power*_average``)             uW
command        an external command printing watts, one number per line                     W
=============  ==========================================================================  ==========

A sensor has ``rails`` (what it measures), ``total_rail`` (the rail that covers the others, e.g.
the Jetson module input ``VDD_IN`` / ``POM_5V_IN``; ``None`` means the total is the sum of the
rails) and ``scope`` (module, cpu-package, gpu-board, ...). ``counter`` sensors return
cumulative joules, the others watts.
"""

import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import subprocess
import time

from .errors import Unavailable
from .fs import Root
from .vocab import AUTO_SENSORS, SENSORS

# Rails that measure a Jetson module's whole input (the others are subsets of it).
MODULE_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
SCOPE_NOTES = {
    "module": "the Jetson module's input rail: SoC, DRAM, eMMC and regulators, not the carrier board",
    "module-rails-sum": "the sum of the module's monitored rails (no module input rail on this board)",
    "rail": "one rail chosen with --power-rail",
    "cpu-package": "CPU package energy (RAPL), not DRAM or the rest of the board",
    "gpu-board": "the GPU board as NVML reports it, not the host",
    "hwmon": "what this hwmon chip measures (see its name)",
    "external": "whatever the external meter measures (e.g. the whole board at its power input)",
}


class Sensor:
    """Base class: poll :meth:`read` every ``interval_s`` seconds."""

    name = ""
    scope = ""
    counter = False  # True: read() returns cumulative joules per rail
    streaming = False  # True: the sensor pushes readings (a child process), read() is not used
    interval_s = 0.01

    def __init__(self):
        self.rails = []
        self.total_rail = None
        self.wrap_j = {}  # counter rails: the counter's range in joules (it wraps to 0 past it)
        self.source = None
        self.files = _Files()

    def read(self):
        """One reading: {rail: watts}, or {rail: joules} for counters."""
        raise NotImplementedError

    def stream(self, stop):
        """Yield readings until ``stop`` (a threading.Event) is set.

        Paced with ``time.sleep`` (which releases the GIL and wakes nothing else), so between
        readings the sampling thread costs the timed loop nothing.
        """
        read, sleep, now, interval = self.read, time.sleep, time.time, self.interval_s
        next_at = now()
        while not stop.is_set():
            yield read()
            next_at += interval
            delay = next_at - now()
            if delay > 0:
                sleep(delay)
            else:
                next_at = now()

    def select_rail(self, rail):
        """Use ``rail`` as the total (``--power-rail``)."""
        if rail not in self.rails:
            raise Unavailable("power rail %r not measured by %s; rails: %s"
                              % (rail, self.name, ", ".join(self.rails) or "none"))
        self.total_rail = rail
        self.scope = "rail"

    def close(self):
        self.files.close()

    def describe(self):
        return {"sensor": self.name, "scope": self.scope, "scope_note": SCOPE_NOTES.get(self.scope),
                "rails": list(self.rails), "total_rail": self.total_rail, "source": self.source,
                "counter": self.counter}


def _module_scope(sensor):
    for rail in MODULE_INPUT_RAILS:
        if rail in sensor.rails:
            sensor.total_rail = rail
            sensor.scope = "module"
            return
    sensor.total_rail = None
    sensor.scope = "module-rails-sum"


class Ina3221Hwmon(Sensor):
    """Jetson INA3221, JetPack 5/6 (mainline hwmon driver): watts = bus mV x mA / 1e6."""

    name = "ina3221"

    def __init__(self, root):
        super().__init__()
        self.root = root
        self._channels = []  # (rail, voltage path, current path)
        dirs = root.glob("/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")
        if not dirs:
            raise Unavailable("ina3221: no /sys/bus/i2c/drivers/ina3221/*/hwmon (JetPack 5/6 layout)")
        for d in dirs:
            for n in (1, 2, 3):
                label = root.read("%s/in%d_label" % (d, n))
                volt, curr = "%s/in%d_input" % (d, n), "%s/curr%d_input" % (d, n)
                if not label or label.upper() == "NC" or not root.exists(curr):
                    continue
                if root.read("%s/in%d_enable" % (d, n)) == "0":
                    continue
                name = label if label not in self.rails else "%s (%s)" % (label, d.split("/")[-3])
                self.rails.append(name)
                self._channels.append((name, root.path(volt), root.path(curr)))
        if not self._channels:
            raise Unavailable("ina3221: hwmon found under %s but no labelled channel with in*_input and curr*_input"
                              % ", ".join(dirs))
        self.source = ", ".join(dirs)
        # the chip's conversion time x averaging: readings change no faster than this
        self.update_interval_ms = root.read_int(dirs[0] + "/update_interval")
        _module_scope(self)

    def read(self):
        number = self.files.number
        return dict((rail, number(volt) * number(curr) / 1e6) for rail, volt, curr in self._channels)

    def describe(self):
        info = super().describe()
        info["update_interval_ms"] = self.update_interval_ms
        return info


class Ina3221Iio(Sensor):
    """Jetson INA3221, JetPack 4 (NVIDIA's ina3221x iio driver): ``in_powerN_input`` in mW."""

    name = "ina3221x"

    def __init__(self, root):
        super().__init__()
        self._channels = []
        dirs = root.glob("/sys/bus/i2c/drivers/ina3221x/*/iio:device*")
        if not dirs:
            raise Unavailable("ina3221x: no /sys/bus/i2c/drivers/ina3221x/*/iio:device* (JetPack 4 layout)")
        for d in dirs:
            for name_file in root.glob(d + "/rail_name_*"):
                n = name_file.rsplit("_", 1)[1]
                label = root.read(name_file)
                power = "%s/in_power%s_input" % (d, n)
                if not label or not root.exists(power):
                    continue
                name = label if label not in self.rails else "%s (%s)" % (label, d.split("/")[-2])
                self.rails.append(name)
                self._channels.append((name, root.path(power)))
        if not self._channels:
            raise Unavailable("ina3221x: iio devices found (%s) but no rail_name_N with in_powerN_input"
                              % ", ".join(dirs))
        self.source = ", ".join(dirs)
        _module_scope(self)

    def read(self):
        number = self.files.number
        return dict((rail, number(path) / 1000.0) for rail, path in self._channels)


_TEGRA_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line):
    """Rail watts in one tegrastats line (current values, not the running averages)."""
    return dict((m.group(1), int(m.group(2)) / 1000.0) for m in _TEGRA_RAIL.finditer(line))


class Tegrastats(Sensor):
    """``tegrastats --interval MS``: rail powers in mW, one line per interval."""

    streaming = True
    name = "tegrastats"

    def __init__(self, root, command=None, interval_ms=20):
        super().__init__()
        exe = command or shutil.which("tegrastats")
        if exe is None and root.is_live and os.path.exists("/usr/bin/tegrastats"):
            exe = "/usr/bin/tegrastats"
        if not exe:
            raise Unavailable("tegrastats: not on PATH")
        self.interval_ms = int(interval_ms)
        self.argv = [exe, "--interval", str(self.interval_ms)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf and command is None:  # tegrastats is C stdio: line-buffer it into our pipe
            self.argv = [stdbuf, "-oL"] + self.argv
        self.source = " ".join(self.argv)
        self._proc = None
        first = self._first_line()
        self.rails = sorted(first)
        _module_scope(self)

    def _first_line(self):
        try:
            proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    universal_newlines=True)
        except OSError as exc:
            raise Unavailable("tegrastats: cannot run %s: %s" % (self.argv[0], exc)) from exc
        try:
            for _ in range(5):
                line = proc.stdout.readline()
                if not line:
                    break
                rails = parse_tegrastats(line)
                if rails:
                    return rails
        finally:
            _stop_process(proc)
        err = proc.stderr.read().strip() if proc.stderr else ""
        raise Unavailable("tegrastats: printed no power rails%s" % (": " + err[-200:] if err else ""))

    def read(self):
        raise NotImplementedError("tegrastats streams; use stream()")

    def stream(self, stop):
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      universal_newlines=True)
        try:
            for line in iter(self._proc.stdout.readline, ""):
                if stop.is_set():
                    break
                rails = parse_tegrastats(line)
                if rails:
                    yield rails
        finally:
            _stop_process(self._proc)

    def close(self):
        if self._proc is not None:
            _stop_process(self._proc)


class Nvml(Sensor):
    """NVIDIA GPUs through NVML (ctypes on libnvidia-ml.so.1): energy counter or power in mW."""

    name = "nvml"
    scope = "gpu-board"

    def __init__(self, root, library=None):
        super().__init__()
        names = [library] if library else ["libnvidia-ml.so.1", ctypes.util.find_library("nvidia-ml")]
        self._lib = None
        errors = []
        for lib_name in [n for n in names if n]:
            try:
                self._lib = ctypes.CDLL(lib_name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if self._lib is None:
            raise Unavailable("nvml: cannot load libnvidia-ml.so.1 (%s)" % ("; ".join(errors) or "not found"))
        rc = self._lib.nvmlInit_v2()
        if rc != 0:
            raise Unavailable("nvml: nvmlInit failed with NVML error %d (no NVIDIA driver or GPU?)" % rc)
        count = ctypes.c_uint(0)
        self._lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        self._handles = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if self._lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            buf = ctypes.create_string_buffer(96)
            self._lib.nvmlDeviceGetName(handle, buf, 96)
            self._handles.append(("gpu%d %s" % (i, buf.value.decode("utf-8", "replace")), handle))
        if not self._handles:
            raise Unavailable("nvml: no GPU handle available")
        self.rails = [name for name, _ in self._handles]
        energy = ctypes.c_ulonglong(0)
        self.counter = self._lib.nvmlDeviceGetTotalEnergyConsumption(self._handles[0][1], ctypes.byref(energy)) == 0
        if not self.counter:
            power = ctypes.c_uint(0)
            rc = self._lib.nvmlDeviceGetPowerUsage(self._handles[0][1], ctypes.byref(power))
            if rc != 0:
                raise Unavailable("nvml: this GPU reports neither energy nor power (NVML error %d)" % rc)
        self.source = "libnvidia-ml (%s)" % ("nvmlDeviceGetTotalEnergyConsumption" if self.counter
                                             else "nvmlDeviceGetPowerUsage")

    def read(self):
        out = {}
        for name, handle in self._handles:
            if self.counter:
                value = ctypes.c_ulonglong(0)
                self._lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(value))
                out[name] = value.value / 1000.0  # mJ -> J
            else:
                value = ctypes.c_uint(0)
                self._lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(value))
                out[name] = value.value / 1000.0  # mW -> W
        return out

    def close(self):
        try:
            self._lib.nvmlShutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def parse_nvidia_smi(lines):
    """``index, power.draw`` CSV lines (no header, no units) -> {"gpuN": watts}."""
    out = {}
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            try:
                out["gpu%s" % parts[0]] = float(parts[1])
            except ValueError:
                continue
    return out


class NvidiaSmi(Sensor):
    """``nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits -lms N``."""

    streaming = True
    name = "nvidia-smi"
    scope = "gpu-board"

    def __init__(self, root, command=None, interval_ms=20):
        super().__init__()
        exe = command or shutil.which("nvidia-smi")
        if not exe:
            raise Unavailable("nvidia-smi: not on PATH")
        base = [exe, "--query-gpu=index,power.draw", "--format=csv,noheader,nounits"]
        try:
            out = subprocess.check_output(base, stderr=subprocess.STDOUT, universal_newlines=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as exc:
            raise Unavailable("nvidia-smi: %s" % exc) from exc
        first = parse_nvidia_smi(out.splitlines())
        if not first:
            raise Unavailable("nvidia-smi: no power.draw reading (%s)" % out.strip()[-200:])
        self.rails = sorted(first)
        self.argv = base + ["-lms", str(int(interval_ms))]
        self.source = " ".join(self.argv)
        self._proc = None

    def read(self):
        raise NotImplementedError("nvidia-smi streams; use stream()")

    def stream(self, stop):
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      universal_newlines=True)
        pending = {}
        try:
            for line in iter(self._proc.stdout.readline, ""):
                if stop.is_set():
                    break
                pending.update(parse_nvidia_smi([line]))
                if len(pending) == len(self.rails):
                    yield pending
                    pending = {}
        finally:
            _stop_process(self._proc)


class Rapl(Sensor):
    """RAPL package energy counters (``/sys/class/powercap/intel-rapl:N``, also on AMD Zen)."""

    name = "rapl"
    scope = "cpu-package"
    counter = True

    def __init__(self, root):
        super().__init__()
        if not root.exists("/sys/class/powercap"):
            raise Unavailable("rapl: /sys/class/powercap is not present (no RAPL driver, or a VM that does not expose it)")
        zones = [z for z in root.glob("/sys/class/powercap/intel-rapl:*")
                 if re.search(r"intel-rapl:\d+$", z) and (root.read(z + "/name") or "").startswith("package")]
        if not zones:
            raise Unavailable("rapl: no package zone under /sys/class/powercap (intel-rapl:N with name package-N)")
        self._zones = []
        for z in zones:
            energy = z + "/energy_uj"
            err = root.read_error(energy)
            if err:
                raise Unavailable("rapl: %s is not readable (%s); RAPL counters are root-only on Linux >= 5.10: "
                                  "run the agent as root or make energy_uj readable" % (energy, err))
            name = root.read(z + "/name")
            self.rails.append(name)
            self._zones.append((name, root.path(energy)))
            span = root.read_int(z + "/max_energy_range_uj")
            if span:
                self.wrap_j[name] = span / 1e6
        self.source = ", ".join(zones)

    def read(self):
        number = self.files.number
        return dict((name, number(path) / 1e6) for name, path in self._zones)


class Hwmon(Sensor):
    """Generic hwmon power channels: ``power*_input`` or ``power*_average`` in microwatts."""

    name = "hwmon"
    scope = "hwmon"

    def __init__(self, root):
        super().__init__()
        self._channels = []
        for d in root.glob("/sys/class/hwmon/hwmon*"):
            chip = root.read(d + "/name") or d.rsplit("/", 1)[1]
            seen = set()
            for f in root.glob(d + "/power*_input") + root.glob(d + "/power*_average"):
                stem = f.rsplit("/", 1)[1].rsplit("_", 1)[0]
                if stem in seen or root.read_error(f):
                    continue  # power1_input and power1_average are one rail
                seen.add(stem)
                label = root.read("%s/%s_label" % (d, stem))
                name = "%s/%s" % (chip, stem) + (" (%s)" % label if label else "")
                self._channels.append((name, root.path(f)))
        if not self._channels:
            raise Unavailable("hwmon: no readable power*_input or power*_average under /sys/class/hwmon")
        self.rails = [c[0] for c in self._channels]
        self.source = "/sys/class/hwmon"

    def read(self):
        number = self.files.number
        return dict((name, number(path) / 1e6) for name, path in self._channels)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class Command(Sensor):
    """An external command printing watts: one number per line, streamed or one per run."""

    streaming = True
    name = "command"
    scope = "external"

    def __init__(self, root, command):
        super().__init__()
        if not command:
            raise Unavailable("command: no --power-command given")
        self.command = command
        self.rails = ["external"]
        self.total_rail = "external"
        self.source = command
        self._proc = None
        try:
            out = subprocess.check_output(shlex.split(command), stderr=subprocess.STDOUT,
                                          universal_newlines=True, timeout=5)
            if not _NUMBER.search(out):
                raise Unavailable("command: %r printed no number: %r" % (command, out.strip()[-200:]))
        except subprocess.TimeoutExpired as exc:
            # a streaming meter never exits: accept it if it printed a number in 5 s
            text = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode("utf-8", "replace")
            if not _NUMBER.search(text or ""):
                raise Unavailable("command: %r printed no watts within 5 s" % command) from exc
        except (OSError, subprocess.CalledProcessError) as exc:
            raise Unavailable("command: %r failed: %s" % (command, exc)) from exc

    def read(self):
        raise NotImplementedError("command streams; use stream()")

    def stream(self, stop):
        while not stop.is_set():
            self._proc = subprocess.Popen(shlex.split(self.command), stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, universal_newlines=True)
            try:
                for line in iter(self._proc.stdout.readline, ""):
                    if stop.is_set():
                        break
                    m = _NUMBER.search(line)
                    if m:
                        yield {"external": float(m.group(0))}
            finally:
                _stop_process(self._proc)

    def close(self):
        if self._proc is not None:
            _stop_process(self._proc)


class _Files:
    """sysfs attributes kept open and re-read with ``pread`` at offset 0.

    Each re-read makes the driver produce a fresh value; keeping the descriptor saves an
    open/close per sample, which keeps the sampling thread's share of the CPU (and of the GIL
    the timed loop needs) small.
    """

    def __init__(self):
        self._fds = {}

    def number(self, path):
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return float(os.pread(fd, 64, 0).split()[0])

    def close(self):
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}


def _stop_process(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass




def open_sensor(kind="auto", root=None, command=None, rail=None, tegrastats=None):
    """The sensor to use, probed with one real reading.

    Args:
        kind: "auto", "none" or one of :data:`SENSORS` ("command" needs ``command``).
        root: a :class:`Root` (fixture trees in tests).
        command: the external command for "command" (auto uses it first when given).
        rail: use this rail as the total instead of the module input / the sum.
        tegrastats: path of the tegrastats executable (default: from PATH).

    Raises:
        Unavailable: no sensor; the message gives each candidate's reason.
    """
    root = root if isinstance(root, Root) else Root(root or "/")
    if kind == "none":
        raise Unavailable("power measurement disabled (--power none)")
    if kind not in ("auto",) + SENSORS:
        raise Unavailable("unknown power sensor %r; valid: auto, none, %s" % (kind, ", ".join(SENSORS)))
    factories = {
        "ina3221": lambda: Ina3221Hwmon(root),
        "ina3221x": lambda: Ina3221Iio(root),
        "tegrastats": lambda: _live_only(root, "tegrastats", tegrastats, lambda: Tegrastats(root, tegrastats)),
        "nvml": lambda: _live_only(root, "nvml", None, lambda: Nvml(root)),
        "nvidia-smi": lambda: _live_only(root, "nvidia-smi", None, lambda: NvidiaSmi(root)),
        "rapl": lambda: Rapl(root),
        "hwmon": lambda: Hwmon(root),
        "command": lambda: Command(root, command),
    }
    order = [kind] if kind != "auto" else (["command"] if command else []) + list(AUTO_SENSORS)
    reasons = []
    for name in order:
        try:
            sensor = factories[name]()
            if not sensor.streaming:
                sensor.read()  # probe: permissions and file formats fail here, not mid-run
        except Unavailable as exc:
            reasons.append(str(exc))
            continue
        except (OSError, ValueError, IndexError) as exc:
            reasons.append("%s: reading failed (%s)" % (name, exc))
            continue
        if rail:
            sensor.select_rail(rail)
        return sensor
    if kind == "auto":
        raise Unavailable("no power sensor found: " + "; ".join(reasons))
    raise Unavailable(reasons[0])


def _live_only(root, name, explicit, factory):
    """Commands and libraries describe the running machine, not a fixture tree."""
    if not root.is_live and not explicit:
        raise Unavailable("%s: only on the running system (root is %s)" % (name, root.root))
    return factory()
