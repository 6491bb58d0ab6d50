"""Budget verdicts: limits, regressions against a baseline, and figures that were not measured."""

from __future__ import annotations

import dataclasses

import pytest

from edgec import budgets
from edgec.ci.config import ConfigError, load_config
from edgec.ci.gates import (
    BUDGETS,
    FAILED,
    NO_BASELINE,
    NOT_MEASURED,
    PASSED,
    check_budget_value,
    evaluate,
    figures,
)
from edgec.config import BuildOptions
from edgec.search.api import CONSTRAINTS, Request
from tests.helpers.ci import write_config

FIGS = {"artifact": "model.tflite", "bytes": 40_000, "float_accuracy": 0.97, "artifact_accuracy": 0.96,
        "accuracy_drop_points": 1.0, "float_tflite_bytes": 120_000, "compression_rate": 3.0,
        "edgetpu_op_share": 0.8, "edgetpu_ops": 10, "edgetpu_ops_on_tpu": 8,
        "edgetpu_first_cpu_op": {"index": 8, "op": "SQUARE"}}


def by_name(verdicts):
    return {v["name"]: v for v in verdicts}


def test_limits():
    v = by_name(evaluate({"max_accuracy_drop": 1.0, "max_bytes": 39_999, "min_compression_rate": 3.0,
                          "min_edgetpu_op_share": 0.9}, FIGS, None))
    assert v["max_accuracy_drop"]["verdict"] == PASSED  # the limit itself holds
    assert v["max_bytes"]["verdict"] == FAILED and "40,000 bytes, exceeds max_bytes 39,999" in v["max_bytes"]["message"]
    assert v["min_compression_rate"]["verdict"] == PASSED
    tpu = v["min_edgetpu_op_share"]
    assert tpu["verdict"] == FAILED and "8 of 10 ops (80.0 %)" in tpu["message"] and "SQUARE" in tpu["message"]


def test_latency_is_never_invented():
    v = by_name(evaluate({"max_latency_p90_ms": 5, "max_latency_growth_pct": 10}, FIGS,
                         {"latency_p90_ms": 1.0, "latency_std_ms": 0.1}))
    assert v["max_latency_p90_ms"]["verdict"] == NOT_MEASURED and v["max_latency_p90_ms"]["value"] is None
    assert "--device" in v["max_latency_p90_ms"]["message"]
    skipped = by_name(evaluate({"max_latency_p90_ms": 5}, FIGS, None, {"latency_p90_ms": "the device is asleep"}))
    assert skipped["max_latency_p90_ms"]["message"] == "not measured: the device is asleep"
    # a device that was asked for and did not answer fails the budget: a gate that cannot be checked
    failed = by_name(evaluate({"max_latency_p90_ms": 5}, FIGS, None,
                              failed={"latency_p90_ms": "the agent on ssh://pi@lab could not measure model.tflite"}))
    assert failed["max_latency_p90_ms"]["verdict"] == FAILED
    assert failed["max_latency_p90_ms"]["message"].startswith("could not be measured: the agent on ssh://pi@lab")


def test_regressions_against_the_baseline():
    base = {"bytes": 39_000, "artifact_accuracy": 0.965, "latency_p90_ms": 1.0, "latency_std_ms": 0.05}
    figs = {**FIGS, "latency_p90_ms": 1.12, "latency_std_ms": 0.02}
    budgets = {"max_bytes_growth_pct": 2, "max_accuracy_regression": 0.3, "max_latency_growth_pct": 10}
    v = by_name(evaluate(budgets, figs, base))
    growth = v["max_bytes_growth_pct"]
    assert growth["verdict"] == FAILED and growth["value"] == 2.5641 and growth["regression"]
    assert v["max_accuracy_regression"]["verdict"] == FAILED and v["max_accuracy_regression"]["value"] == 0.5
    # 1.12 ms against 1.0 ms: +12 %, but the allowance is 1.0 * 1.10 + spread 0.05 = 1.15 ms
    lat = v["max_latency_growth_pct"]
    assert lat["verdict"] == PASSED and lat["allowed"] == 1.15 and lat["value"] == 12.0
    worse = by_name(evaluate(budgets, {**figs, "latency_p90_ms": 1.2}, base))
    assert worse["max_latency_growth_pct"]["verdict"] == FAILED
    better = by_name(evaluate(budgets, {**figs, "bytes": 30_000, "artifact_accuracy": 0.99}, base))
    assert better["max_bytes_growth_pct"]["verdict"] == PASSED and not better["max_bytes_growth_pct"]["regression"]
    assert "above the baseline" in better["max_accuracy_regression"]["message"]


def test_no_baseline_is_said():
    v = by_name(evaluate({"max_bytes_growth_pct": 2}, FIGS, None, no_baseline="the baseline has no row m/t"))
    assert v["max_bytes_growth_pct"]["verdict"] == NO_BASELINE
    assert "the baseline has no row m/t" in v["max_bytes_growth_pct"]["message"]


def test_figures_from_a_manifest():
    manifest = {"target": "edgetpu", "precision": "int8", "artifacts": [{"file": "model_int8.tflite", "format": "tflite", "bytes": 30_000,
                                                    "sha256": "ab"}],
                "verification": {"float_accuracy": 0.9, "artifact_accuracy": 0.89, "accuracy_drop_points": 1.0,
                                 "agreement": 0.98},
                "edgetpu": {"compiled": False, "analysis": {"op_share": 1.0, "ops": 9, "ops_on_tpu": 9,
                                                            "first_cpu_op": None}}}
    f = figures(manifest, 120_000)
    assert f["compression_rate"] == 4.0 and f["edgetpu_op_share"] == 1.0 and f["bytes"] == 30_000
    assert figures(manifest, None)["compression_rate"] is None
    # the Edge TPU's figures come from its target: another kind's build has none of them
    assert "edgetpu_op_share" not in figures({**manifest, "target": "tflite"}, None)


def test_p50_and_p90_latency_budgets_are_named_and_read_apart():
    figs = {**FIGS, "latency_median_ms": 2.0, "latency_p90_ms": 6.0, "latency_device": "local (x86)",
            "latency_runs": 50}
    v = by_name(evaluate({"max_latency_p50_ms": 5, "max_latency_p90_ms": 5}, figs, None))
    assert v["max_latency_p50_ms"]["verdict"] == PASSED and v["max_latency_p50_ms"]["value"] == 2.0
    assert v["max_latency_p50_ms"]["message"].startswith("p50 latency 2.0000 ms on local (x86) over 50 runs")
    assert v["max_latency_p90_ms"]["verdict"] == FAILED and v["max_latency_p90_ms"]["message"].startswith("p90 latency")


def test_build_ci_and_search_take_their_budgets_from_one_vocabulary():
    from edgec import targets

    kinds_own = {b.name: b for kind in targets.REGISTRY for b in targets.target_class(kind).budgets}
    assert BUDGETS == {**budgets.used_by("ci"), **kinds_own} and "min_edgetpu_op_share" in kinds_own
    assert set(CONSTRAINTS) == {"max_accuracy_drop", "max_latency_p50_ms", "max_bytes"}
    fields = {f.name for f in dataclasses.fields(Request)} & set(budgets.BUDGETS)
    assert fields == set(CONSTRAINTS)  # every search constraint is a budget, and none other
    options = {f.name for f in dataclasses.fields(BuildOptions)} & set(budgets.BUDGETS)
    assert options == set(budgets.used_by("build")) == {"max_accuracy_drop"}
    for b in budgets.BUDGETS.values():  # a latency budget says which statistic it limits
        assert (b.statistic is not None) == b.latency
        if b.rule == "max" and b.latency:
            assert b.name == f"max_latency_{b.statistic}_ms"
    assert budgets.upgrade({"max_latency_ms": 5.0}, "search") == {"max_latency_p50_ms": 5.0}
    assert budgets.upgrade({"max_latency_ms": 5.0}, "ci") == {"max_latency_ms": 5.0}  # never read there


@pytest.mark.parametrize("key, message", [
    ("max_latency_ms", "budget 'max_latency_ms' is not a name any more: it was search's median latency; write "
                       "'max_latency_p50_ms' (the median) or 'max_latency_p90_ms' (the 90th percentile)"),
    ("max_latency_p50_ms", None),
])
def test_a_ci_config_takes_the_p50_budget_and_names_it_for_the_old_spelling(stub_project, key, message):
    path = write_config(stub_project, f"""
        [[model]]
        path = "models/digits.keras"
        calib = "data/calib.npz"
        [[target]]
        profile = "rpi5"
        [budgets]
        {key} = 5
        """)
    if message is None:
        (row,) = load_config(path, out=stub_project / "dist").rows
        assert row.budgets == {key: 5}
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:7: {message}"
    assert info.value.exit_code == 2


@pytest.mark.parametrize("value, problem", [(0, "expected a positive number"), (-1, "expected a positive number"),
                                            (1.5, None)])
def test_limits_are_checked_by_the_budget(value, problem):
    assert budgets.check_value("max_latency_p50_ms", value) == problem
    # a kind's own budget is declared by its target and checked by the same rules
    assert check_budget_value("min_edgetpu_op_share", 1.5) == (
        "expected a share between 0 and 1 (1.0: every op on the Edge TPU)")
    assert "min_edgetpu_op_share" not in budgets.BUDGETS
    assert budgets.check_value("max_accuracy_drop", -1) == "expected a number >= 0"
