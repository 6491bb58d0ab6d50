"""TensorRT engines: built only where TensorRT and a GPU of the profile's compute capability exist."""

from __future__ import annotations

import numpy as np
import pytest

import edgec
from edgec import profiles
from edgec.targets.tensorrt import engine_available


def test_no_engine_here_says_why():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        ok, reason = engine_available(profiles.get("jetson-orin-nano"))
        assert not ok and "tensorrt" in reason and "build.json" in reason
    else:
        pytest.skip("TensorRT is installed here; see test_engine_builds_and_matches_onnx")


@pytest.mark.jetson
@pytest.mark.hardware
def test_engine_builds_and_matches_onnx(digits_dir, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack or pip install 'edgec[tensorrt]')")
    from edgec.targets.tensorrt.engine import cuda_compute_capabilities

    try:
        caps = cuda_compute_capabilities()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"no CUDA GPU: {exc}")
    profile = next((p for p in profiles.all_profiles() if p.target == "tensorrt"
                    and engine_available(p)[0]), None)
    if profile is None:
        pytest.skip(f"no profile matches this GPU (compute capability {', '.join(caps)}) and TensorRT version")
    precision = "int8" if profile.supports("int8") else "fp16"
    result = edgec.build(digits_dir / "digits_cnn.keras", target=profile.id, precision=precision,
                         calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"), out=tmp_path)
    engine = next(a for a in result.manifest["artifacts"] if a["file"] == "model.engine")
    assert engine["verification"]["agreement"] >= 0.97
    assert np.isfinite(engine["verification"]["max_abs_diff"])
