"""Option values a build must refuse before any work: non-finite numbers, a negative std, an
empty output path. One error line, exit 2, nothing written."""

from __future__ import annotations

import pytest

import edgec
from edgec.errors import EdgecError


@pytest.mark.parametrize("args, found", [
    (("--max-accuracy-drop", "nan"), "'nan' is not a finite number"),
    (("--max-accuracy-drop", "inf"), "'inf' is not a finite number"),
    (("--lr", "nan"), "'nan' is not a finite number"),
    (("--prune", "-inf"), "'-inf' is not a finite number"),
    (("--distill-weight", "NaN"), "'NaN' is not a finite number"),
    (("--mean", "0.5", "--std", "-0.5"), "--std values must not be 0 or negative"),
    (("--mean", "0.5", "--std", "nan"), "expected finite numbers"),
    (("--mean", "inf", "--std", "1"), "expected finite numbers"),
    (("-o", ""), "an empty path"),
])
def test_build_refuses(args, found, digits_model_path, cli_runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_runner("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "--eval", "e.npz", *args)
    assert code == 2 and found in err, err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [("search", "--max-latency-ms", "nan"), ("ci", "--min-seconds", "inf"),
                                     ("serve", "--lease-seconds", "nan")])
def test_other_commands_refuse_non_finite(command, cli_runner):
    code, _, err = cli_runner(*command)
    assert code == 2 and "is not a finite number" in err, err


@pytest.mark.parametrize("kwargs, found", [({"max_accuracy_drop": float("nan")}, "--max-accuracy-drop must be a finite"),
                                           ({"lr": float("inf")}, "--lr must be a finite"),
                                           ({"out": ""}, "--out is empty"),
                                           ({"mean": "0", "std": "0"}, "must not be 0")])
def test_api_refuses(kwargs, found, digits_model_path):
    with pytest.raises(EdgecError, match=found):
        edgec.build(digits_model_path, target="x86-cpu", precision="fp32", **kwargs)


@pytest.mark.parametrize("line", ["max_accuracy_drop = nan", "max_bytes = inf"])
def test_ci_config_refuses_non_finite_budgets(line, tmp_path, cli_runner):
    (tmp_path / "m.keras").write_bytes(b"never loaded")
    (tmp_path / "edgec.toml").write_text(
        f'[[model]]\npath = "m.keras"\n[[target]]\nprofile = "x86-cpu"\nprecision = "fp32"\n[budgets]\n{line}\n')
    code, _, err = cli_runner("ci", "plan", tmp_path / "edgec.toml")
    assert code == 2 and "finite number" in err and "edgec.toml:7" in err, err
