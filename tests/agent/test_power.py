"""Power sensors against fixture trees that copy the real layouts, tegrastats lines, and the
sampling thread; this machine's own answer (a sensor, or unavailable with the reason)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from edgec.agent import power, sensors
from edgec.agent.errors import Unavailable
from edgec.agent.fs import Root
from tests.helpers.agent import FIXTURES, write_in_place

TEGRASTATS = FIXTURES / "tegrastats"


def test_jetson_nano_jetpack4_iio_layout():
    s = sensors.open_sensor("auto", Root(FIXTURES / "jetson-nano-jp4"))
    assert s.name == "ina3221x"
    assert s.rails == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert s.total_rail == "POM_5V_IN" and s.scope == "module"
    assert s.read() == {"POM_5V_IN": 3.326, "POM_5V_GPU": 0.663, "POM_5V_CPU": 1.326}  # in_powerN_input is mW
    assert s.source == "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"


def test_jetson_orin_nano_jetpack6_hwmon_layout():
    s = sensors.open_sensor("auto", Root(FIXTURES / "jetson-orin-nano-jp6"))
    assert s.name == "ina3221"
    # in7 (sum of shunt voltages) and in4..6 (shunt uV) are not rails: they have no label/current pair
    assert s.rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert s.total_rail == "VDD_IN" and s.scope == "module"
    watts = s.read()
    assert watts["VDD_IN"] == pytest.approx(5.088 * 1.016)  # bus mV x mA
    assert watts["VDD_CPU_GPU_CV"] == pytest.approx(5.088 * 0.176)
    assert watts["VDD_SOC"] == pytest.approx(5.088 * 0.296)


def test_jetson_agx_orin_jetpack5_two_chips_without_input_rail():
    s = sensors.open_sensor("auto", Root(FIXTURES / "jetson-agx-orin-jp5"))
    assert s.name == "ina3221"
    assert s.rails == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]  # NC channels skipped
    assert s.total_rail is None and s.scope == "module-rails-sum"
    series = power.to_power([(0.0, s.read())], total_rail=s.total_rail)
    assert series[0][1] == pytest.approx(4.992 * 0.640 + 4.992 * 0.160 + 4.984 * 0.656 + 4.992 * 0.096)


def test_power_rail_option_selects_a_rail():
    s = sensors.open_sensor("ina3221x", Root(FIXTURES / "jetson-nano-jp4"), rail="POM_5V_GPU")
    assert s.total_rail == "POM_5V_GPU" and s.scope == "rail"
    with pytest.raises(Unavailable, match="POM_5V_IN, POM_5V_GPU, POM_5V_CPU"):
        sensors.open_sensor("ina3221x", Root(FIXTURES / "jetson-nano-jp4"), rail="VDD_IN")


@pytest.mark.parametrize("name, expected", [
    ("jetson-nano-jp4", [{"POM_5V_IN": 1.294, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.124},
                         {"POM_5V_IN": 3.326, "POM_5V_GPU": 0.082, "POM_5V_CPU": 1.326},
                         {"POM_5V_IN": 3.407, "POM_5V_GPU": 0.082, "POM_5V_CPU": 1.408}]),
    ("jetson-agx-orin-jp5", [{"VDD_GPU_SOC": 3.194, "VDD_CPU_CV": 0.798, "VIN_SYS_5V0": 3.269, "VDDQ_VDD2_1V8AO": 0.479},
                             {"VDD_GPU_SOC": 12.386, "VDD_CPU_CV": 1.995, "VIN_SYS_5V0": 4.385, "VDDQ_VDD2_1V8AO": 1.278}]),
    ("jetson-orin-nano-jp6", [{"VDD_IN": 4.968, "VDD_CPU_GPU_CV": 0.436, "VDD_SOC": 1.708},
                              {"VDD_IN": 7.253, "VDD_CPU_GPU_CV": 2.341, "VDD_SOC": 1.906},
                              {"VDD_IN": 7.296, "VDD_CPU_GPU_CV": 2.38, "VDD_SOC": 1.913}]),
])
def test_tegrastats_lines(name, expected):
    """Current values (before the slash), never RAM/SWAP/IRAM sizes or the running averages."""
    lines = (TEGRASTATS / f"{name}.txt").read_text().splitlines()
    assert [sensors.parse_tegrastats(line) for line in lines] == expected


@pytest.fixture
def fake_tegrastats(tmp_path):
    """A stand-in tegrastats that replays recorded lines at --interval (no Jetson here)."""
    def make(recording: Path) -> str:
        script = tmp_path / "tegrastats"
        script.write_text(
            f"#!{sys.executable}\nimport sys, time\n"
            "ms = int(sys.argv[sys.argv.index('--interval') + 1]) if '--interval' in sys.argv else 1000\n"
            f"lines = open({str(recording)!r}).read().splitlines()\n"
            "i = 0\nwhile True:\n    print(lines[i % len(lines)], flush=True)\n    i += 1\n    time.sleep(ms / 1000.0)\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return str(script)
    return make


def test_tegrastats_sensor_streams_through_the_monitor(fake_tegrastats):
    exe = fake_tegrastats(TEGRASTATS / "jetson-orin-nano-jp6.txt")
    s = sensors.open_sensor("tegrastats", Root(FIXTURES / "jetson-orin-nano-jp6"), tegrastats=exe)
    assert s.rails == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"] and s.total_rail == "VDD_IN"
    assert s.argv[1:] == ["--interval", "20"]
    monitor = power.PowerMonitor(s).start()
    deadline = time.time() + 20
    while len(monitor.samples) < 6 and time.time() < deadline:
        time.sleep(0.05)
    monitor.stop()
    assert monitor.error is None
    totals = [p[1] for p in monitor.series()]
    assert len(totals) >= 6
    assert set(totals) <= {4.968, 7.253, 7.296} and len(set(totals)) == 3
    assert s._proc.poll() is not None  # the child is gone after stop()


def test_rapl_package_zones_only_and_counter_wrap():
    root = Root(FIXTURES / "x86-rapl")
    s = sensors.open_sensor("auto", root)
    assert s.name == "rapl" and s.counter and s.scope == "cpu-package"
    assert s.rails == ["package-0"]  # not the core/uncore sub-zones, not psys
    assert s.read() == {"package-0": pytest.approx(72383.094521)}  # energy_uj -> J
    span = s.wrap_j["package-0"]
    assert span == pytest.approx(262143.32885)
    # 10 W for 1 s, then a wrap of the counter during the next second at 12 W
    samples = [(0.0, {"package-0": span - 15.0}), (1.0, {"package-0": span - 5.0}), (2.0, {"package-0": 7.0})]
    series = power.to_power(samples, counter=True, wrap_j=s.wrap_j)
    assert [round(p[1], 6) for p in series] == [10.0, 12.0]
    assert [p[0] for p in series] == [0.5, 1.5]


def test_rapl_unreadable_counter_says_why(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    tree = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "x86-rapl", tree)
    (tree / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)
    with pytest.raises(Unavailable, match="root-only"):
        sensors.open_sensor("rapl", Root(tree))


def test_generic_hwmon_microwatts():
    s = sensors.open_sensor("auto", Root(FIXTURES / "amdgpu-hwmon"))
    assert s.name == "hwmon" and s.rails == ["amdgpu/power1"]
    assert s.read() == {"amdgpu/power1": 31.0}


def test_external_command_prints_watts():
    cmd = f"{sys.executable} -c \"print('4.25 W')\""
    s = sensors.open_sensor("command", Root(FIXTURES / "rpi5"), command=cmd)
    monitor = power.PowerMonitor(s).start()
    deadline = time.time() + 20
    while len(monitor.samples) < 2 and time.time() < deadline:
        time.sleep(0.05)
    monitor.stop()
    assert monitor.samples and all(v == {"external": 4.25} for _, v in monitor.samples)
    with pytest.raises(Unavailable, match="printed no number"):
        sensors.open_sensor("command", Root("/"), command=f"{sys.executable} -c \"print('n/a')\"")


def test_no_sensor_lists_every_reason():
    with pytest.raises(Unavailable) as info:
        sensors.open_sensor("auto", Root(FIXTURES / "rpi5"))
    message = str(info.value)
    for name in ("ina3221:", "ina3221x:", "tegrastats:", "nvml:", "rapl:", "hwmon:"):
        assert name in message


def test_this_machine_reports_its_sensor_or_why_not():
    """RAPL counts only when /sys/class/powercap is readable here; otherwise the reason names it."""
    powercap = Path("/sys/class/powercap")
    zones = list(powercap.glob("intel-rapl:*/energy_uj")) if powercap.exists() else []
    readable = [z for z in zones if os.access(z, os.R_OK)]
    try:
        s = sensors.open_sensor("auto", Root("/"))
    except Unavailable as exc:
        assert not readable, f"RAPL is readable here ({readable}) but the agent says: {exc}"
        if not powercap.exists():
            assert "/sys/class/powercap is not present" in str(exc)
        return
    assert s.name in sensors.SENSORS
    reading = s.read() if not s.streaming else None
    assert reading is None or all(v >= 0 for v in reading.values())


def test_window_means_and_energy_per_inference():
    series = [(t / 100.0, 2.0 if t < 100 else 5.0, {"VDD_IN": 2.0 if t < 100 else 5.0}) for t in range(0, 301)]
    info = {"sensor": "ina3221", "scope": "module", "rails": ["VDD_IN"], "total_rail": "VDD_IN"}
    doc = power.summarize(info, series, idle=(0.0, 0.99), active=(1.0, 3.0), inferences=400)
    assert doc["available"] and doc["peak_w"] == 5.0
    assert doc["idle_w"] == pytest.approx(2.0) and doc["active_w"] == pytest.approx(5.0)
    assert doc["energy_mj_per_inference"]["total"] == pytest.approx(5.0 * 2.0 / 400 * 1000)
    assert doc["energy_mj_per_inference"]["above_idle"] == pytest.approx(3.0 * 2.0 / 400 * 1000)
    assert doc["samples"] == {"idle": 100, "active": 201, "total": 301}
    assert doc["rate_hz"] == pytest.approx(100.0)
    assert doc["rails_w"]["active"] == {"VDD_IN": pytest.approx(5.0)}
    empty = power.summarize(info, series, idle=None, active=(5.0, 6.0), inferences=10)
    assert empty == {"available": False, "reason": empty["reason"]} and "no sample" in empty["reason"]


def test_sampling_thread_separates_idle_and_active_on_a_fixture_tree(tmp_path):
    """The real sampling thread reading sysfs files while they change."""
    tree = tmp_path / "nano"
    shutil.copytree(FIXTURES / "jetson-nano-jp4", tree)
    total = tree / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input"
    write_in_place(total, "1500\n")
    s = sensors.open_sensor("ina3221x", Root(tree))
    clock = time.perf_counter
    monitor = power.PowerMonitor(s, clock).start()
    t0 = clock()
    time.sleep(0.4)
    t1 = clock()
    write_in_place(total, "4200\n")
    # a sample is stamped when its read returns: a read of the old value in flight during the write
    # may be stamped just after it, so the active window opens once such a read has landed
    time.sleep(0.05)
    t2 = clock()
    time.sleep(0.4)
    t3 = clock()
    monitor.stop()
    assert monitor.error is None
    doc = power.summarize(s.describe(), monitor.series(), (t0, t1), (t2, t3), inferences=1000)
    assert doc["idle_w"] == pytest.approx(1.5) and doc["active_w"] == pytest.approx(4.2)
    assert doc["energy_mj_per_inference"]["above_idle"] == pytest.approx(2.7 * (t3 - t2))
    assert doc["samples"]["idle"] > 1 and doc["samples"]["active"] > 1
