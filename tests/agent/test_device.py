"""Device detection and the state that shapes a number, on fixture trees of real layouts."""

from __future__ import annotations

import shutil

import pytest

from edgec.agent import device
from edgec.agent.fs import Root
from tests.helpers.agent import FIXTURES


@pytest.mark.parametrize("tree, l4t, jetpack, soc", [
    ("jetson-nano-jp4", "32.7.1", "4.6.1", "tegra210"),
    ("jetson-agx-orin-jp5", "35.4.1", "5.1.2", "tegra234"),
    ("jetson-orin-nano-jp6", "36.3.0", "6.0", "tegra234"),
])
def test_jetson_model_and_jetpack(tree, l4t, jetpack, soc):
    info = device.detect(Root(FIXTURES / tree))
    assert info["kind"] == "jetson"
    assert info["jetson"]["l4t"] == l4t and info["jetson"]["jetpack"] == jetpack and info["jetson"]["soc"] == soc
    assert "Jetson" in info["model"] and "\x00" not in info["model"]


def test_tegra_release_parsing():
    assert device.parse_tegra_release("# R32 (release), REVISION: 5.1, GCID: 27362550, BOARD: t210ref, EABI: aarch64") \
        == {"l4t": "32.5.1", "jetpack": "4.5.1", "jetpack_major": "4", "board": "t210ref"}
    unknown = device.parse_tegra_release("# R36 (release), REVISION: 9.9, GCID: 1, BOARD: generic")
    assert unknown["jetpack"] is None and unknown["jetpack_major"] == "6"  # never guessed
    assert device.parse_tegra_release("garbage") is None


def test_jetson_state_nvpmodel_clocks_temperatures():
    root = Root(FIXTURES / "jetson-nano-jp4")
    st = device.state(root, jetson=True)
    assert st["nvpmodel"] == {"id": 0, "name": "MAXN", "source": "/var/lib/nvpmodel/status"}
    assert st["governors"] == ["schedutil"]
    assert [c["cpu"] for c in st["cpus"]] == [0, 1, 2, 3] and st["cpus"][0]["max_khz"] == 1479000
    assert st["gpu_devfreq"][0]["name"] == "57000000.gpu" and st["gpu_devfreq"][0]["max_hz"] == 921600000
    assert st["temperatures_c"]["CPU-therm"] == 33.0 and st["temperatures_c"]["PMIC-Die"] == 100.0
    assert st["jetson_clocks"]["active"] is False  # CPU min 102 MHz < max


def test_jetson_clocks_detected_when_clocks_are_pinned(tmp_path):
    tree = tmp_path / "nano"
    shutil.copytree(FIXTURES / "jetson-nano-jp4", tree)
    for i in range(4):
        (tree / f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_min_freq").write_text("1479000\n")
    (tree / "sys/class/devfreq/57000000.gpu/min_freq").write_text("921600000\n")
    st = device.state(Root(tree), jetson=True)
    assert st["jetson_clocks"]["active"] is True


def test_orin_nano_power_mode_name():
    st = device.state(Root(FIXTURES / "jetson-orin-nano-jp6"), jetson=True)
    assert st["nvpmodel"]["name"] == "15W" and st["gpu_devfreq"][0]["name"] == "17000000.gpu"
    assert st["temperatures_c"]["tj-thermal"] == pytest.approx(46.312)


def test_raspberry_pi_and_coral():
    rpi = device.detect(Root(FIXTURES / "rpi5"))
    assert rpi["kind"] == "rpi" and rpi["model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert rpi["rpi"]["revision"] == "d04170" and rpi["cpu"]["cores"] == 4 and rpi["accelerators"] == []
    usb = device.detect(Root(FIXTURES / "rpi4-coral-usb"))
    assert usb["kind"] == "rpi"
    assert usb["accelerators"] == [{"kind": "edgetpu", "bus": "usb", "usb_id": "18d1:9302",
                                    "path": "/sys/bus/usb/devices/2-2",
                                    "state": "Coral USB Accelerator (runtime firmware loaded)"}]
    board = device.detect(Root(FIXTURES / "coral-devboard"))
    assert board["kind"] == "coral-devboard" and board["os"] == "Mendel GNU/Linux 5 (Eagle)"
    assert board["accelerators"] == [{"kind": "edgetpu", "bus": "pcie", "path": "/dev/apex_0"}]


def test_generic_cpu_and_this_machine():
    x86 = device.detect(Root(FIXTURES / "x86-rapl"))
    assert x86["kind"] == "generic" and x86["model"].startswith("Intel(R) Core(TM) i7-10700")
    assert x86["cpu"]["cores"] == 2
    live = device.detect(Root("/"))
    assert live["machine"] and live["python"] and live["cpu"]["cores"] >= 1
    assert device.state(Root("/"))["cpus"] is not None
