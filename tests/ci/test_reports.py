"""Reports of a results document: JUnit valid against the schema, Markdown under 1 MiB with the
regressions marked, shards balanced and merged."""

from __future__ import annotations

import json

import pytest

from edgec.ci import reports, shards
from edgec.ci.config import load_config
from edgec.ci.gates import evaluate
from edgec.ci.runner import document
from edgec.errors import EdgecError
from tests.helpers.ci import validate_junit, write_config


def row(model: str, target: str, *, budgets=None, figs=None, baseline=None, error=None, wall=3.0, standalone=None,
        cache="built"):
    figs = {"artifact": "model.tflite", "bytes": 40_000, "float_accuracy": 0.97, "artifact_accuracy": 0.96,
            "accuracy_drop_points": 1.0, "float_tflite_bytes": 120_000, "compression_rate": 3.0, **(figs or {})}
    verdicts = [] if error else evaluate(budgets or {"max_bytes": 50_000}, figs, baseline)
    status = "error" if error else ("failed" if any(v["verdict"] == "failed" for v in verdicts) else "passed")
    doc = {"id": f"{model}/{target}", "model": model, "target": target, "profile": target, "kind": "tflite",
           "precision": "int8", "out_dir": f"dist/{model}/{target}", "status": status, "error": error,
           "cache": {"state": cache, "key": "0" * 64, "note": None},
           "durations_s": {"wall": wall, "stages": {}, "standalone": standalone or wall, "shared": []},
           "figures": None if error else figs, "budgets": verdicts, "warnings": []}
    if baseline:
        doc["baseline"] = baseline
    return doc


def results(rows, **kw):
    return document(rows, config_path="edgec.toml", config_sha256="c0ffee", baseline=None, measured_on=None,
                    only=[], duration_s=12.5, **kw)


@pytest.fixture
def mixed():
    return results([
        row("digits", "rpi5"),
        row("digits", "coral-usb", budgets={"max_bytes": 30_000, "max_latency_p90_ms": 5}),
        row("resnet", "rpi5", error="cannot read model 'resnet.keras': truncated <file> & \"quotes\""),
        row("resnet", "jetson", budgets={"max_bytes_growth_pct": 2}, figs={"bytes": 45_000},
            baseline={"bytes": 40_000, "artifact_accuracy": 0.96}),
    ])


def test_junit_is_valid_and_counts_every_budget(mixed, junit_schema):
    xml = validate_junit(junit_schema, reports.to_junit(mixed))
    assert xml.get("tests") == "8" and xml.get("failures") == "2" and xml.get("errors") == "1"
    assert xml.get("skipped") == "1"
    suites = {s.get("name"): s for s in xml.findall("testsuite")}
    assert list(suites) == ["digits/rpi5", "digits/coral-usb", "resnet/rpi5", "resnet/jetson"]
    coral = {c.get("name"): c for c in suites["digits/coral-usb"].findall("testcase")}
    assert set(coral) == {"build", "max_bytes", "max_latency_p90_ms"}
    assert "exceeds max_bytes 30,000" in coral["max_bytes"].find("failure").get("message")
    assert coral["max_latency_p90_ms"].find("skipped") is not None
    error = suites["resnet/rpi5"].find("testcase/error")
    assert "truncated <file> & \"quotes\"" in error.get("message")
    assert suites["resnet/jetson"].find("testcase[@name='max_bytes_growth_pct']/failure") is not None


def test_markdown_marks_regressions_and_failures(mixed):
    md = reports.to_markdown(mixed)
    assert md.startswith("## edgec ci: ❌ failed")
    lines = md.splitlines()
    jetson = next(line for line in lines if line.startswith("| resnet/jetson"))
    assert "(+12.5 %) ▲ regression" in jetson and "❌ max_bytes_growth_pct" in jetson
    assert next(line for line in lines if line.startswith("| resnet/rpi5")).endswith("💥 error |")
    assert "- **resnet/rpi5** build error: cannot read model" in md
    assert "- **digits/coral-usb** `max_bytes`:" in md
    assert "`max_latency_p90_ms`: not measured" in md
    ok = reports.to_markdown(results([row("digits", "rpi5")]))
    assert ok.startswith("## edgec ci: ✅ passed") and "### Failures" not in ok


def test_markdown_stays_under_a_mebibyte():
    many = results([row(f"model{i:05d}", "coral-usb", budgets={"max_bytes": 1_000}, figs={"artifact": "x" * 120})
                    for i in range(6000)])
    md = reports.to_markdown(many)
    assert len(md.encode()) < 1024 * 1024
    assert "Left out to stay under" in md and "the JSON results have every row" in md
    assert md.count("| model") > 1000


def test_shards_balanced_by_baseline_durations(tmp_path, stub_project):
    text = '[[model]]\npath = "models/digits.keras"\ncalib = "data/calib.npz"\n[[model]]\npath = "models/other.keras"\n'
    text += 'calib = "data/calib.npz"\n' + "".join(f'[[target]]\nprofile = "{p}"\n'
                                                  for p in ("rpi5", "rpi4", "x86-cpu", "coral-usb"))
    cfg = load_config(write_config(stub_project, text))
    by_count = shards.plan(cfg, 3)
    sizes = sorted(len(s["rows"]) for s in by_count["include"])
    assert sizes == [2, 3, 3] and by_count["include"][0]["only"].startswith("--only digits/rpi5 --only")
    assert sorted(r for s in by_count["include"] for r in s["rows"]) == sorted(r.id for r in cfg.rows)
    # one slow row: it gets a shard of its own
    base = results([row("digits", "rpi5", wall=100.0)] + [row(m, t, wall=10.0) for m in ("digits", "other")
                                                          for t in ("rpi4", "x86-cpu", "coral-usb")]
                   + [row("other", "rpi5", wall=10.0)])
    balanced = shards.plan(cfg, 2, base)["include"]
    assert [s["rows"] for s in balanced][0] == ["digits/rpi5"] and balanced[0]["estimate_s"] == 100.0
    assert balanced[1]["estimate_s"] == 70.0 and len(balanced[1]["rows"]) == 7
    assert len(shards.plan(cfg, 20)["include"]) == 8  # never an empty shard
    with pytest.raises(EdgecError, match="--shards must be at least 1"):
        shards.plan(cfg, 0)


def test_merge(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results([row("digits", "rpi5")])))
    b.write_text(json.dumps(results([row("digits", "coral-usb", budgets={"max_bytes": 1})])))
    merged = shards.merge([a, b])
    assert [r["id"] for r in merged["rows"]] == ["digits/rpi5", "digits/coral-usb"]
    assert merged["verdict"] == "failed" and merged["summary"]["failed"] == 1 and merged["merged_from"] == [str(a), str(b)]
    with pytest.raises(EdgecError, match="row digits/rpi5 is in both"):
        shards.merge([a, a])
    other = results([row("x", "y")])
    other["config"]["sha256"] = "another"
    (tmp_path / "c.json").write_text(json.dumps(other))
    with pytest.raises(EdgecError, match="different configs"):
        shards.merge([a, tmp_path / "c.json"])
    (tmp_path / "d.json").write_text('{"kind": "something else"}')
    with pytest.raises(EdgecError, match="not an 'edgec ci --json' results document"):
        shards.merge([tmp_path / "d.json"])
