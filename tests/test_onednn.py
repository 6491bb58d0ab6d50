"""oneDNN and fine-tuning: the native abort it causes on this kind of CPU, and builds that fine-tune
running TensorFlow's own kernels instead (TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import,
so each case runs in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# TensorFlow 2.21's oneDNN batch matmul strides a rank-2 right operand broadcast against rank-4
# batch dimensions as if it were rank 4, reading and writing past its buffer
MATMUL = """
import numpy as np, tensorflow as tf
tf.random.set_seed(280958)
p = tf.random.normal([13, 1, 3, 4]); w = tf.random.normal([4, 16])
for _ in range(20):
    out = tf.linalg.matmul(p, w)
np.testing.assert_allclose(out.numpy(), np.einsum("abij,jk->abik", p.numpy(), w.numpy()), rtol=1e-4, atol=1e-4)
print("ok")
"""
PLAN = """
import json, sys
import edgec
from edgec import pipeline
from edgec.tfcompat import onednn_state
options = json.loads(sys.argv[3])
if options:
    options["fine_tune"] = sys.argv[2]
pipeline.plan(sys.argv[1], "rpi5", precision="int8", calib=sys.argv[2], **options)
print(json.dumps(onednn_state()))
"""


def _run(code: str, *args, onednn: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "EDGEC_ONEDNN_OFF")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def _avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_tensorflow_kernels_compute_the_batch_matmul():
    proc = _run(MATMUL, onednn="0")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-1000:]


@pytest.mark.skipif(not _avx512(), reason="the abort was seen on AVX-512 CPUs; oneDNN takes other paths here")
def test_onednn_batch_matmul_aborts_here():
    """Documents the native crash: a heap corruption ends the process by a signal, or (when the
    allocator happens to survive it) gives wrong numbers; either way it is not TensorFlow's result."""
    proc = _run(MATMUL, onednn="1")
    if proc.returncode == 0:
        pytest.skip("oneDNN's batch matmul did not corrupt the heap on this run (the corruption depends on the "
                    "allocator's state)")
    assert proc.returncode < 0 or proc.returncode in (134, 139), proc.stderr[-1000:]


@pytest.mark.parametrize("options,env,expected", [
    ({"prune": 0.5, "qat": True}, None, (False, "edgec's processes")),
    ({}, None, (False, "edgec's processes")),
    ({"prune": 0.5, "qat": True}, "1", (True, "in the environment")),
])
def test_builds_run_without_onednn_unless_it_is_asked_for(digits_model_path, digits_dir, options, env, expected):
    proc = _run(PLAN, digits_model_path, digits_dir / "train.npz", json.dumps(options), onednn=env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["onednn"] is expected[0]
    assert expected[1] in state["onednn_reason"]
