"""Low-rank factorization: each pair computes the rank-r kernel exactly, ranks follow the fraction
or the energy, only layers that save MACs are split, and the Dense-heavy MLP loses half its
parameters in a build."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.optimize import graph, lowrank, resolve

RNG = np.random.default_rng(1)


def spec(**options):
    return resolve(BuildOptions(fine_tune="train.npz", **options), Precision.FP32)


def test_rank_from_fraction_and_from_energy():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert lowrank.choose_rank(s, fraction=0.25, energy=None) == 1
    assert lowrank.choose_rank(s, fraction=0.3, energy=None) == 2  # ceil
    assert lowrank.choose_rank(s, fraction=None, energy=0.7) == 1
    assert lowrank.choose_rank(s, fraction=None, energy=0.9) == 2
    assert lowrank.choose_rank(s, fraction=None, energy=0.99) == 4


def convs_model():
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    L = keras.layers
    inp = keras.Input((11, 11, 3), name="image")
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="same_s2")(inp)
    x = L.Conv2D(48, (3, 5), strides=(1, 2), padding="valid", name="valid_3x5")(x)
    x = L.Conv2D(40, 3, dilation_rate=2, padding="same", use_bias=False, name="dilated")(x)
    x = L.Conv2D(64, 1, name="pointwise")(x)
    x = L.Reshape((-1, 64))(x)
    x = L.Conv1D(32, 3, padding="causal", name="conv1d")(x)
    x = L.Dense(48, activation="tanh", name="fc")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="convs")


@pytest.mark.parametrize("options", [{"low_rank": 0.25}, {"low_rank_energy": 0.8}])
def test_each_pair_computes_the_rank_r_kernel(options):
    """The factorized model equals the original with every chosen kernel replaced by its rank-r
    SVD approximation (the spatial form laid out as (k_h*C_in) x (k_w*C_out))."""
    model = convs_model()
    chosen, rows = lowrank.plan(model, spec(**options))
    assert set(chosen) >= {"same_s2", "valid_3x5", "dilated", "pointwise", "fc"}
    assert {"spatial", "bottleneck", "dense"} >= {c["form"] for c in chosen.values()}
    factorized = lowrank.factorize(model, chosen)
    reference = graph.private_copy(model)
    for name, choice in chosen.items():
        layer = reference.get_layer(name)
        kernel = layer.kernel.numpy()
        a, b = lowrank._factors(choice["matrix"], choice["rank"])  # noqa: SLF001
        approx = a @ b
        if choice["form"] == "spatial":
            kh, kw, cin, cout = kernel.shape
            approx = approx.reshape(kh, cin, kw, cout).transpose(0, 2, 1, 3)
        layer.kernel.assign(approx.reshape(kernel.shape).astype(np.float32))
    x = RNG.random((8, 11, 11, 3)).astype(np.float32)
    np.testing.assert_allclose(factorized(x).numpy(), reference(x).numpy(), atol=1e-5, rtol=1e-4)
    assert factorized.output_names == model.output_names
    for name, choice in chosen.items():
        first = factorized.get_layer(f"{name}{lowrank.SUFFIX}")
        assert first.get_config().get("units", first.get_config().get("filters")) == choice["rank"]
        assert not first.use_bias
    assert graph.totals(factorized)["macs"] < graph.totals(model)["macs"]
    row = {r["layer"]: r for r in rows}
    assert row["logits"]["factorized"] is False and "model output" in row["logits"]["reason"]


def test_layers_that_would_not_save_macs_stay_whole():
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    inp = keras.Input((16,))
    x = keras.layers.Dense(16, name="square")(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(x))
    chosen, rows = lowrank.plan(model, spec(low_rank=0.9))
    assert not chosen
    assert rows[0]["reason"] == "rank 15 of 16 saves no MACs"
    with pytest.raises(EdgecError, match=r"--low-rank 0.9 factorizes no layer .*square: rank 15 of 16 saves no MACs"):
        lowrank.low_rank(model, None, spec(low_rank=0.9), None)


@pytest.mark.slow
def test_the_mlp_loses_half_its_parameters(speed_models, build_with):
    paths = speed_models["mlp"]
    result = build_with(paths["model"], precision="fp32", low_rank=0.2, fine_tune=str(paths["fine_tune"]),
                        eval=str(paths["eval"]))
    o = result.manifest["optimization"]
    assert o["steps"] == ["low_rank"] and o["low_rank"] == {"rank_fraction": 0.2, "energy": None}
    assert o["structure"]["params"]["cut_percent"] >= 50.0, o["structure"]
    step = o["step_details"][1]
    done = [r for r in step["layers"] if r["factorized"]]
    assert [r["rank"] for r in done] == [13, 103, 103] and {r["form"] for r in done} == {"dense"}
    assert result.manifest["artifacts"][0]["op_counts"]["FULLY_CONNECTED"] == 7
    layers = {r["layer"] for r in o["layers"]}  # the per-layer table names the factorized halves
    assert any(name.endswith(lowrank.SUFFIX) for name in layers)
    assert result.manifest["verification"]["accuracy_drop_points"] < 6.0
