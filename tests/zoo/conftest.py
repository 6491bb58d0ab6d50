"""The zoo's fixtures: each architecture made once per test session, on first use; the whole zoo
runs only when asked for by marker (``make conformance`` = ``pytest -m zoo tests/zoo``)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    """Deselect the whole zoo (hours of builds) unless the marker expression names it."""
    if "zoo" in (config.option.markexpr or ""):
        return
    zoo = [item for item in items if item.get_closest_marker("zoo")]
    if zoo:
        config.hook.pytest_deselected(items=zoo)
        items[:] = [item for item in items if not item.get_closest_marker("zoo")]


class _MadeOnFirstUse(dict):
    """arch -> directory with the saved model, calib.npz and eval.npz, made the first time."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        from tests.zoo.models import save

        path = save(name, self.root / name)
        self[name] = path
        return path


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory) -> _MadeOnFirstUse:
    """arch -> saved model path (its calib.npz and eval.npz beside it), shared by the session."""
    return _MadeOnFirstUse(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def zoo_builds(zoo_models, tmp_path_factory):
    """(arch, profile) -> the build's row (tests/zoo/run.py), each built once per session."""
    from tests.zoo.run import build_row

    root = tmp_path_factory.mktemp("zoo-dist")
    rows: dict[tuple[str, str], dict] = {}

    def get(arch: str, profile: str, calib_samples: int = 8) -> dict:
        if (arch, profile) not in rows:
            path = zoo_models[arch]
            rows[arch, profile] = build_row(path, profile, path.parent, root / arch / profile, calib_samples)
        return rows[arch, profile]

    return get
