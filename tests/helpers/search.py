"""Search test helpers: search spaces, requests, studies with queued trials."""

from __future__ import annotations

from pathlib import Path


def bracket_zero_name(trials: int, eta: int) -> str:
    """A study name whose first trials all fall into Hyperband's bracket 0 (two brackets)."""
    from edgec.search import hyperband

    return next(f"hb{i}" for i in range(1000)
                if all(hyperband.bracket_of(f"hb{i}", n, 2, eta) == 0 for n in range(trials)))


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PTQ_SPACE = """
[space]
precision = ["int8", "fp32", "fp16", "dynamic"]
prune_structure = "none"
prune = 0
cluster = "none"
quantization = "ptq"
"""

SMALL_SPACE = """
[space]
precision = ["int8", "fp32"]
prune_structure = "none"
prune = [0.0, 0.6]
cluster = "none"
quantization = ["ptq", "qat"]
epochs = 1
lr = 0.002
distill = false
"""


def request_for(data, tmp_path, space_text: str, device, **changes):
    from edgec.search.api import Request

    fields = dict(target="x86-cpu", eval=str(data["eval"]), model=data["model"], fine_tune=str(data["fine_tune"]),
                  calib=str(data["calib"]), trials=3, space=write_space(tmp_path / "space.toml", space_text),
                  device=device, out=tmp_path / "search", seed=0, heartbeat=2, sampler="random")
    fields.update(changes)
    return Request(**fields)


def enqueue(request, directions: list[str], params: list[dict], name: str | None = None):
    """Create the request's study and queue trials with fixed parameters (they run first)."""
    import optuna

    from edgec.search.study import open_storage, storage_url

    storage = open_storage(storage_url(request.storage, Path(request.out)), heartbeat=None)
    study = optuna.create_study(storage=storage, study_name=name or request.study_name(), directions=directions,
                                load_if_exists=True)
    for p in params:
        study.enqueue_trial(p)
    return study
