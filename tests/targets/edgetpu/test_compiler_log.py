"""edgetpu_compiler output parsing, on verbatim copies of real compiler output (fixtures/README.md)."""

from __future__ import annotations

import json

import pytest

from edgec.targets.edgetpu.compiler_log import (
    compare_with_analysis,
    compiler_totals,
    parse_compiler_output,
    status_category,
)
from edgec.targets.edgetpu.rules import rules
from tests.helpers.edgetpu import fixture_text


def test_v16_console_with_table_and_off_chip_streaming():
    parsed = parse_compiler_output(fixture_text("v16_console_yolov5s_224.txt"))
    assert parsed["version"] == "16.0.384591198" and parsed["succeeded"] is True and parsed["errors"] == []
    (m,) = parsed["models"]
    assert m["input_model"] == "yolov5s-int8-224.tflite" and m["output_model"] == "yolov5s-int8-224_edgetpu.tflite"
    assert m["compile_ms"] == 3173 and m["tpu_subgraphs"] == 2 and m["ops"] == 294
    assert m["input_bytes"] == round(7.37 * 2**20) and m["output_bytes"] == round(8.34 * 2**20)
    assert m["on_chip_bytes"] == round(6.08 * 2**20) and m["on_chip_remaining_bytes"] == 0
    assert m["off_chip_bytes"] == round(1.70 * 2**20)
    assert (m["ops_on_tpu"], m["ops_on_cpu"]) == (289, 5)  # the compiler's own summary lines
    rows = m["operators"]
    assert len(rows) == 17
    # the per-op table, summed independently, agrees with the summary lines
    assert sum(r["count"] for r in rows if r["on_tpu"]) == 289
    assert sum(r["count"] for r in rows if not r["on_tpu"]) == 5
    assert sum(r["count"] for r in rows) == m["ops"]
    cpu = [(r["op"], r["count"], r["category"]) for r in rows if not r["on_tpu"]]
    assert cpu == [("CONCATENATION", 1, "unspecified"), ("TRANSPOSE", 1, "unspecified"),
                   ("QUANTIZE", 2, "unspecified"), ("RESHAPE", 1, "unspecified")]


@pytest.mark.parametrize("name, on_tpu, on_cpu, categories", [
    ("v15_console_yolov3_tiny.txt", 2, 34, {"after_cpu_op", "unspecified", "op_version", "unsupported_op"}),
    ("v15_console_yolov5s.txt", 1, 293, {"after_cpu_op", "unspecified", "unsupported_op", "op_constraint",
                                         "op_version"}),
])
def test_v15_console_partition_statuses(name, on_tpu, on_cpu, categories):
    parsed = parse_compiler_output(fixture_text(name))
    assert parsed["version"] == "15.0.340273435" and parsed["succeeded"] is None  # v15 prints no verdict line
    (m,) = parsed["models"]
    assert (m["ops_on_tpu"], m["ops_on_cpu"]) == (on_tpu, on_cpu)
    rows = m["operators"]
    assert sum(r["count"] for r in rows) == m["ops"] == on_tpu + on_cpu
    assert {r["category"] for r in rows if not r["on_tpu"]} == categories
    assert "other" not in {r["category"] for r in rows}, "every status line of real output is known"


def test_operation_log_files():
    tiny = parse_compiler_output(fixture_text("v14_tiny_yolo_edgetpu.log"))
    assert tiny["version"] == "14.1.317412892"
    (m,) = tiny["models"]
    assert m["input_model"] == "tiny_yolo.tflite" and m["output_model"] == "tiny_yolo_edgetpu.tflite"
    assert len(m["operators"]) == 8 and (m["ops_on_tpu"], m["ops_on_cpu"]) == (19, 6)
    assert m["operators"][2] == {"op": "RESIZE_NEAREST_NEIGHBOR", "count": 1, "status": "Operation version not supported",
                                 "on_tpu": False, "category": "op_version"}
    mnist4 = parse_compiler_output(fixture_text("v15_mnist4_edgetpu.log"))["models"][0]
    assert {r["op"]: r["category"] for r in mnist4["operators"] if not r["on_tpu"]} == {
        "QUANTIZE": "unspecified", "DEQUANTIZE": "dtype"}
    mnist7 = parse_compiler_output(fixture_text("v15_mnist7_edgetpu.log"))["models"][0]
    assert mnist7["ops_on_cpu"] == 0 and mnist7["ops_on_tpu"] == 8


def test_failed_compiles_keep_the_compilers_reason():
    big = parse_compiler_output(fixture_text("v16_failed_large_activations.txt"))
    assert big["succeeded"] is False and big["models"] == []
    assert "Compilation failed: Compilation failed due to large activation tensors in model." in big["errors"]
    newer = parse_compiler_output(fixture_text("v16_failed_op_version.txt"))
    assert newer["succeeded"] is False and newer["models"] == []
    assert newer["errors"][0].startswith("ERROR: Didn't find op for builtin opcode 'QUANTIZE' version '3'")
    assert "Model could not be parsed" in newer["errors"]


def test_segment_block():
    parsed = parse_compiler_output(fixture_text("v16_segment_0_of_2.txt"))
    (m,) = parsed["models"]
    assert m["input_model"].endswith("_segment_0_of_2.tflite") and m["ops"] == 84
    assert m["on_chip_bytes"] == round(6.02 * 2**20) and m["off_chip_bytes"] == 0
    assert m["operation_log"] == "efficientdet_lite3_512_ptq_segment_0_of_2_edgetpu.log"
    assert m["operators"] == [] and "ops_on_tpu" not in m  # without -s the table is only in the .log
    assert compiler_totals(parsed)["ops"] == 84 and compiler_totals(parsed)["ops_on_tpu"] is None


def test_two_blocks_in_one_output_are_two_models():
    text = fixture_text("v16_segment_0_of_2.txt") + fixture_text("v16_segment_0_of_2.txt").split("\n", 1)[1]
    parsed = parse_compiler_output(text)
    assert len(parsed["models"]) == 2 and compiler_totals(parsed)["ops"] == 168


def test_rule_table_agrees_with_what_real_compilers_mapped():
    """Every op a real compiler mapped in the fixtures is in the rule table; the ones it called
    'Operation not supported' are absent from Coral's table or listed there as runtime 14+."""
    ops = rules()["ops"]
    mapped, unsupported = set(), set()
    for name in ("v16_console_yolov5s_224.txt", "v15_console_yolov3_tiny.txt", "v15_console_yolov5s.txt",
                 "v14_tiny_yolo_edgetpu.log", "v15_mnist4_edgetpu.log", "v15_mnist7_edgetpu.log"):
        for m in parse_compiler_output(fixture_text(name))["models"]:
            for r in m["operators"]:
                (mapped if r["on_tpu"] else unsupported if r["category"] == "unsupported_op" else set()).add(r["op"])
    assert mapped and mapped <= set(ops), mapped - set(ops)
    assert unsupported == {"LEAKY_RELU", "TRANSPOSE"}
    assert "LEAKY_RELU" not in ops and ops["TRANSPOSE"]["min_runtime"] == 14
    assert status_category("Mapped to Edge TPU") == "mapped" and status_category("something new") == "other"


def _parsed(rows):
    return {"models": [{"operators": [{"op": op, "count": n, "status": s, "on_tpu": s == "Mapped to Edge TPU",
                                       "category": status_category(s)} for op, n, s in rows]}]}


def test_compare_finds_where_compiler_and_analysis_disagree(leaky_build):
    report = json.loads((leaky_build.out_dir / "edgetpu_report.json").read_text())
    counts = {}
    for r in report["ops"]:
        counts.setdefault(r["op"], [0, 0])[0 if r["on_tpu"] else 1] += 1
    agree = []
    for op, (tpu, cpu) in counts.items():
        if tpu:
            agree.append((op, tpu, "Mapped to Edge TPU"))
        if cpu:
            agree.append((op, cpu, "Operation not supported" if op == "LEAKY_RELU" else
                          "More than one subgraph is not supported"))
    assert compare_with_analysis(report, _parsed(agree)) == []
    # a compiler that mapped LEAKY_RELU (and so everything after it) disagrees op by op
    all_mapped = [(op, tpu + cpu, "Mapped to Edge TPU") for op, (tpu, cpu) in counts.items()]
    diff = {d["op"]: d for d in compare_with_analysis(report, _parsed(all_mapped))}
    assert "LEAKY_RELU" in diff and diff["LEAKY_RELU"]["analysis"]["reasons"] == ["unsupported_op"]
    assert diff["LEAKY_RELU"]["compiler"]["on_tpu"] == 1
    assert "(total)" not in diff


def test_compare_with_a_real_log_of_another_model(coral_build):
    """Fed a real log of a different model, every differing op type and the total are reported."""
    report = json.loads((coral_build.out_dir / "edgetpu_report.json").read_text())
    diff = {d["op"]: d for d in compare_with_analysis(report, parse_compiler_output(fixture_text("v15_mnist7_edgetpu.log")))}
    assert {"CONV_2D", "MEAN", "QUANTIZE", "SOFTMAX", "RESHAPE", "(total)"} <= set(diff)
    assert "FULLY_CONNECTED" not in diff  # 2 mapped on both sides
    assert diff["(total)"] == {"op": "(total)", "analysis": {"ops": 9}, "compiler": {"ops": 8}}
