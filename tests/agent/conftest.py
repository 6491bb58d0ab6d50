"""Fixtures of the agent tests: device fixture trees, a results database that is never the real
one, the agent zipapp, fp32 + int8 digits builds, and a real sshd on loopback."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Results and engine caches go to the test's tmp dir, never to the real home."""
    monkeypatch.setenv("EDGEC_RESULTS_DB", str(tmp_path / "results.db"))
    monkeypatch.setenv("EDGEC_AGENT_CACHE", str(tmp_path / "agent-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small real ONNX model (MatMul + Add + Relu, dynamic batch) written with the onnx package."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    w = numpy_helper.from_array(rng.randn(16, 8).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.randn(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with a throwaway host key and client key.

    Skips with the reason when sshd, ssh-keygen, ssh or scp is missing or the server does not
    start (not root and no privilege-separation directory, sandbox limits, ...).
    """
    sshd_bin = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    missing = [name for name, found in (("sshd", sshd_bin), ("ssh-keygen", shutil.which("ssh-keygen")),
                                        ("ssh", shutil.which("ssh")), ("scp", shutil.which("scp"))) if not found]
    if missing:
        pytest.skip(f"cannot start a loopback sshd: {', '.join(missing)} not installed (Debian: openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    user = getpass.getuser()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([os.path.abspath(sshd_bin), "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    up = False
    while time.time() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                up = True
                break
        time.sleep(0.1)
    if not up:
        proc.kill()
        proc.wait()
        log.close()
        pytest.skip(f"sshd did not start on 127.0.0.1:{port}: {(d / 'sshd.log').read_text()[-500:]}")
    args = ["--identity", str(d / "client_key"), "--ssh-option", f"UserKnownHostsFile={d / 'known_hosts'}",
            "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "LogLevel=ERROR"]
    probe = subprocess.run(["ssh", "-i", str(d / "client_key"), "-o", "BatchMode=yes", "-o",
                            f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=no",
                            "-p", str(port), f"{user}@127.0.0.1", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        proc.kill()
        proc.wait()
        log.close()
        pytest.skip(f"sshd runs but key login as {user} fails: {probe.stderr.strip()[-300:]}; "
                    f"sshd log: {(d / 'sshd.log').read_text()[-300:]}")
    yield {"url": f"ssh://{user}@127.0.0.1:{port}", "args": args, "dir": d, "python": sys.executable}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
