"""Searches on real training and real measurements (small data, one or a few epochs): the front
with its baselines, resume, reuse of a repeated configuration, constraints first, Hyperband on
fine-tune epochs, `show` and `export`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.search import PTQ_SPACE, SMALL_SPACE, bracket_zero_name, enqueue, request_for

pytest.importorskip("optuna")

DIRECTIONS = ["maximize", "minimize", "minimize"]


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_search_reports_the_front_with_baselines_and_resumes(data, tmp_path, quick_device):
    from edgec.search import api, report

    lines: list[str] = []
    request = request_for(data, tmp_path, SMALL_SPACE, quick_device, trials=2)
    first = api.run(request, on_event=lambda line, event: lines.append(line))
    assert first["counts"]["finished"] == 2 and first["stopped"] == "done"
    assert any(line.startswith("[1/2] trial") and "ETA" in line for line in lines)
    # each trial says what it starts (build, measurement) before it ends
    assert any(line.startswith("  trial 0: measuring on ") for line in lines), lines

    request.trials = 4  # started again: it continues to 4 trials, not 2 + 4
    doc = api.run(request)
    assert doc["counts"]["finished"] == 4 and len(doc["trials"]) == 4
    ends = [e for e in _journal(request.out) if e["event"] == "end"]
    assert sorted(e["trial"] for e in ends) == [0, 1, 2, 3]

    names = [b["name"] for b in doc["baselines"]]
    assert names == ["fp32", "int8 PTQ"]
    fp32, int8 = doc["baselines"]
    assert fp32["bytes"] > int8["bytes"] and 0 <= int8["drop"] < 5
    assert doc["objectives"] == ["accuracy", "latency", "size"]
    assert doc["settings"]["energy"]["available"] in (True, False)
    assert doc["front"], doc["trials"]
    for t in doc["front"]:
        r = t["result"]
        lo, hi = r["latency"]["ci_ms"]
        assert lo <= r["latency"]["p50_ms"] <= hi and r["latency"]["devices"] == ["local"]
        assert 2 <= len(r["latency"]["runs"]) <= 3
        assert r["zstd_bytes"] < r["bytes"] and Path(r["build_dir"], "manifest.json").is_file()
        assert t["values"] == [r["accuracy"], r["latency"]["p50_ms"], r["zstd_bytes"]]
    md = report.print_markdown(doc)
    assert "| fp32 |" in md and "| int8 PTQ |" in md

    # show, the plot and export, through the CLI
    name = request.study_name()
    proc = run_cli("search", "show", "--study", name, "--out", request.out, "--json", "--plot", tmp_path / "f.png")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert [t["number"] for t in shown["front"]] == [t["number"] for t in doc["front"]]
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    table = run_cli("search", "show", "--study", name, "--out", request.out)
    assert "Pareto front" in table.stdout and "int8 PTQ" in table.stdout
    chosen = doc["front"][0]
    proc = run_cli("search", "export", "--from", request.out, "--study", name, "--trial", chosen["number"],
                   "--out", tmp_path / "chosen")
    assert proc.returncode == 0, proc.stderr
    exported = Path(proc.stdout.strip())
    assert exported == tmp_path / "chosen" / "x86-cpu"
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["artifacts"][0]["sha256"] == chosen["result"]["sha256"]
    again = run_cli("search", "export", "--from", request.out, "--study", name, "--trial", chosen["number"],
                    "--out", tmp_path / "chosen")
    assert again.returncode == 2 and "exists" in again.stderr
    missing = run_cli("search", "export", "--from", request.out, "--study", name, "--trial", 99, "--out", tmp_path)
    assert missing.returncode == 2 and "has no trial 99" in missing.stderr


def test_a_repeated_configuration_reuses_its_result(data, tmp_path, quick_device):
    from edgec.search import api

    request = request_for(data, tmp_path, PTQ_SPACE.replace('["int8", "fp32", "fp16", "dynamic"]', '["int8"]'),
                          quick_device, trials=3)
    doc = api.run(request)
    trials = doc["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    assert len({t["key"] for t in trials}) == 1
    # the baseline int8 PTQ build is this configuration: built and measured once for the study
    assert all(t["timings"]["builds"] == t["timings"]["builds_reused"] for t in trials)
    assert [t["reused_from"] for t in trials] == [None, 0, 0]
    assert [t["number"] for t in doc["front"]] == [0]


@pytest.mark.slow
def test_constraints_stop_trials_before_fine_tuning(data, tmp_path, quick_device):
    from edgec.search import api

    space = SMALL_SPACE.replace("prune = [0.0, 0.6]", "prune = 0.6").replace('["ptq", "qat"]', '"ptq"')
    request = request_for(data, tmp_path, space, quick_device, trials=2, max_bytes=60_000, max_latency_p50_ms=1000.0)
    enqueue(request, DIRECTIONS, [{"precision": "fp32"}, {"precision": "int8"}])
    doc = api.run(request)
    fp32, int8 = doc["trials"]
    assert fp32["state"] == "PRUNED" and fp32["stopped"]["by"] == "constraint" and fp32["stopped"]["stage"] == "probe"
    assert "--max-bytes" in fp32["stopped"]["reason"] and fp32["constraints"]["bytes"] > 0
    probe_dir = Path(fp32["stopped"]["probe"]["build_dir"])
    probe = json.loads((probe_dir / "manifest.json").read_text())
    assert probe["options"]["epochs"] == 1 and probe["options"]["eval"] is None  # no fine-tuning, no verification
    assert probe["optimization"]["fine_tune_data"]["train_samples"] < 64
    assert fp32["timings"]["measure"] == 0  # the bytes alone broke the limit
    assert int8["state"] == "COMPLETE" and int8["probe"]["p50_ms"] < 1000 and int8["feasible"]
    assert doc["stopped_early"] == {"constraint": 1}


@pytest.mark.slow
def test_hyperband_stops_a_trial_at_its_first_fine_tune_rung(data, tmp_path, quick_device):
    from edgec.search import api

    # eta 2: with two trials at a rung, the better half (one) goes on
    space = SMALL_SPACE.replace("prune = [0.0, 0.6]", "prune = 0.8").replace('["ptq", "qat"]', '"ptq"') \
        .replace('precision = ["int8", "fp32"]', 'precision = "int8"').replace("epochs = 1", "epochs = 2") \
        .replace("lr = 0.002", "lr = [0.003, 0.000001]") + "\n[hyperband]\nreduction_factor = 2\n"
    name = bracket_zero_name(2, eta=2)
    request = request_for(data, tmp_path, space, quick_device, trials=2, study=name)
    enqueue(request, DIRECTIONS, [{"lr": 0.003}, {"lr": 0.000001}], name=name)
    doc = api.run(request)
    good, bad = doc["trials"]
    assert good["state"] == "COMPLETE" and set(good["rungs"]) == {"fine_tune@1"}
    assert bad["state"] == "PRUNED" and bad["stopped"]["by"] == "hyperband"
    assert bad["stopped"]["rung"] == "fine_tune@1" and bad["rungs"]["fine_tune@1"] < good["rungs"]["fine_tune@1"]
    assert bad["timings"]["builds"] == 1  # stopped after the one-epoch build, before the full one
    assert doc["stopped_early_share"] == 0.5


def test_usage_errors_are_one_line(data, tmp_path, cli_runner):
    base = ["search", str(data["model"]), "--target", "x86-cpu", "--eval", str(data["eval"]), "--out", str(tmp_path)]
    code, _, err = cli_runner(*base, "--builder", "x:y")
    assert code == 2 and "not both" in err
    code, _, err = cli_runner(*base, "--objectives", "accuracy,speed")
    assert code == 2 and "unknown objective(s) speed" in err
    code, _, err = cli_runner(*base)
    assert code == 2 and "need representative data: pass --calib DATA" in err
    code, _, err = cli_runner(*base, "--calib", str(data["calib"]))
    assert code == 2 and "pass --fine-tune DATA" in err
    code, _, err = cli_runner(*base, "--calib", str(data["calib"]), "--eval", str(data["calib"]))
    assert code == 2 and "has no labels" in err
    code, _, err = cli_runner(*base, "--labels", "a=b", "--fine-tune", str(data["fine_tune"]))
    assert code == 2 and "need(s) --server" in err


def test_a_study_resumes_only_with_its_own_arguments(data, tmp_path, quick_device):
    from edgec.errors import EdgecError
    from edgec.search import api
    from edgec.search.study import SETTINGS_ATTR

    request = request_for(data, tmp_path, PTQ_SPACE, quick_device, objectives=["accuracy", "size"])
    study = enqueue(request, ["maximize", "minimize"], [])
    settings = api.settings_of(request, *api.check(request), ["accuracy", "size"], {}, None)
    study.set_user_attr(SETTINGS_ATTR, {**settings, "target": "rpi5"})
    with pytest.raises(EdgecError, match="was started with another target: \"rpi5\""):
        api.run(request)


def test_a_configuration_the_build_refuses_fails_once_and_is_not_built_again(data, tmp_path, quick_device):
    from edgec.errors import EdgecError
    from edgec.search import api

    space = PTQ_SPACE.replace('["int8", "fp32", "fp16", "dynamic"]', '"int8"') + "calib_samples = 0\n"
    request = request_for(data, tmp_path, space, quick_device, trials=2)
    with pytest.raises(EdgecError, match="10 trials failed in a row; the last one: the build refused"):
        api.run(request)
    doc = api.show(request.study_name(), out=request.out)
    failed = doc["trials"]
    assert len(failed) == 10 and all(t["state"] == "FAIL" for t in failed)
    assert "--calib-samples must be positive" in failed[0]["error"]
    assert [t["reused_from"] for t in failed[1:]] == [0] * 9
