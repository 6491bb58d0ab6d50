"""--sparse-inference: TF-MOT's XNNPACK policy prunes the 1x1 convolutions, the converter stores
them sparse behind DENSIFY ops, and LiteRT runs the artifact. Whether it runs faster is measured
by bench/bench_speed.py, not asserted."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.errors import EdgecError


@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_sparse_build_stores_the_1x1_kernels_sparse(speed_models, build_with, precision):
    paths = speed_models["mobilenet"]
    result = build_with(paths["model"], precision=precision, sparse_inference=True,
                        fine_tune=str(paths["fine_tune"]), eval=str(paths["eval"]), epochs=2)
    m = result.manifest
    o = m["optimization"]
    assert o["steps"] == ["prune"] and o["sparse_inference"]["pruning_policy"] == "PruneForLatencyOnXNNPack"
    assert o["prune"]["sparsity"] == 0.75 and m["options"]["sparse_inference"] is True
    step = o["step_details"][1]
    assert step["pruning_policy"] == "PruneForLatencyOnXNNPack"
    pruned = [e for e in step["layers"] if e["pruned"]]
    left = {e["layer"]: e["reason"] for e in step["layers"] if not e["pruned"]}
    assert len(pruned) == 18 and all(e["zero_share"] == pytest.approx(0.75, abs=0.01) for e in pruned)
    assert left["logits"] == "XNNPACK's sparse kernels take 1x1 Conv2D only"
    sparse = o["sparse_inference"]
    assert sparse["densify_ops"] == 18 == m["artifacts"][0]["op_counts"]["DENSIFY"]
    for kernel in sparse["sparse_kernels"]:
        assert kernel["stored_values"] <= 0.3 * np.prod(kernel["shape"])
    assert "bench/bench_speed.py" in sparse["speed"]
    assert m["verification"]["artifact_accuracy"] > 0.5  # LiteRT reads the sparse kernels right


def test_a_model_xnnpack_cannot_run_sparse_is_refused_with_the_reason(arch_paths, build_with):
    with pytest.raises(EdgecError, match=r"--sparse-inference: model 'digits_cnn' cannot use XNNPACK's sparse "
                                         r"inference: Could not find `Conv2D 3x3` layer .*; drop --sparse-inference"):
        build_with(arch_paths["cnn"], precision="fp32", sparse_inference=True, epochs=1)
