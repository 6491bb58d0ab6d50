"""The latency constraint names its percentile (p50, as the latency objective; CI's budget is the
p90): the old spelling still works with a warning, and studies started under it resume."""

from __future__ import annotations

import pytest

from edgec.errors import EdgecError


def test_deprecated_spelling_with_the_new_one_is_one_line(cli_runner, tmp_path):
    code, _, err = cli_runner("search", "run", "-t", "x86-cpu", "--eval", "e.npz", "--max-latency-ms", "5",
                              "--max-latency-p50-ms", "5", "--out", tmp_path)
    assert code == 2, err
    assert "--max-latency-p50-ms, not also its deprecated spelling --max-latency-ms" in err


def test_a_study_started_with_max_latency_ms_resumes():
    optuna = pytest.importorskip("optuna")
    from edgec.search.study import SETTINGS_ATTR, open_study

    storage = optuna.storages.InMemoryStorage()
    directions = ["maximize", "minimize"]
    old = {"directions": directions, "constraints": {"max_accuracy_drop": 1.0, "max_latency_ms": 5.0}}
    study = optuna.create_study(storage=storage, study_name="s", directions=directions)
    study.set_user_attr(SETTINGS_ATTR, old)
    same = {"directions": directions, "constraints": {"max_accuracy_drop": 1.0, "max_latency_p50_ms": 5.0}}
    assert open_study(storage, "s", same, sampler=None).study_name == "s"
    other = {"directions": directions, "constraints": {"max_accuracy_drop": 1.0, "max_latency_p50_ms": 6.0}}
    with pytest.raises(EdgecError, match="another constraints"):
        open_study(storage, "s", other, sampler=None)
