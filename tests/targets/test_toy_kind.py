"""A target kind added from a test file, without a line of edgec changed: its package is this module
and its registration one entry in ``edgec.targets.REGISTRY``.

The toy kind has its own profile table (``[toy]``), writes a float .tflite with the TFLite
converter plus a sidecar file, ships both to the device for LiteRT, narrows the search space and
has a budget of its own. Its profile is loaded, validated, listed and built from; the kind then
passes the same conformance template as the kinds edgec ships with, and its build is measured by
the real agent on this host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgec import profiles, targets
from edgec.budgets import CI, Budget
from edgec.config import Precision
from edgec.errors import EdgecError
from edgec.targets.base import Artifact, BuildContext, Target
from edgec.targets.schema import positive
from tests.targets.conformance import KindConformance

SIDECAR = "toy.json"


class ToyTarget(Target):
    """A board that runs float .tflite models with LiteRT and reads its core count from a sidecar."""

    kind = "toy"
    runtime = "litert"
    section = ("toy", {"cores": (int, True, positive), "board": (str, False, None)})
    space = {"cluster": ["none"], "epochs": {"low": 1, "high": 3}}
    budgets = (Budget("max_toy_ops", "ops", "ops of the toy model", "toy_ops", "max", (CI,), kinds=("toy",)),)

    def check_kind(self, profile, precision, options) -> None:
        if precision is not Precision.FP32:
            raise EdgecError(f"the toy board runs fp32 only; profile '{profile.id}' asked for {precision.value}")

    def write(self, ctx: BuildContext) -> list[Artifact]:
        from edgec.targets.tflite import artifact_info, convert

        path = ctx.workdir / "toy.tflite"
        path.write_bytes(convert(ctx.model, Precision.FP32, progress=ctx.progress, output_names=ctx.output_names))
        (ctx.workdir / SIDECAR).write_text(json.dumps({"cores": ctx.profile.toy["cores"]}))
        info = artifact_info(path)
        ctx.extra["toy"] = {"ops": info["num_ops"], "cores": ctx.profile.toy["cores"]}
        return [Artifact(file=path.name, role="model", format="tflite", precision="fp32", verify_with="litert",
                         info=info),
                Artifact(file=SIDECAR, role="config", format="json")]

    def runner(self, path: Path, ctx: BuildContext | None = None):
        from edgec.targets.tflite import LiteRTRunner

        return LiteRTRunner(path, threads=1)

    def shipment(self, workdir: Path, artifacts: list[Artifact]) -> dict:
        return {"litert": {"files": {"toy.tflite": "toy.tflite", SIDECAR: SIDECAR}, "run": "toy.tflite",
                           "runtime": "litert"}}

    def figures(self, manifest: dict) -> dict:
        return {"toy_ops": (manifest.get("toy") or {}).get("ops")}


PROFILE = """id = "toy-board"
device = "Toy board (2 cores, LiteRT)"
target = "toy"
runtime = "litert"
precisions = ["fp32"]
default_precision = "fp32"

[toy]
cores = 2
board = "rev B"
"""


@pytest.fixture(scope="module")
def toy_profiles(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("toy-profiles")
    (directory / "toy-board.toml").write_text(PROFILE)
    return directory


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    """The one registry line of the kind."""
    monkeypatch.setitem(targets.REGISTRY, "toy", f"{__name__}:ToyTarget")


@pytest.fixture(autouse=True, scope="module")
def toy_conformance_profiles(toy_profiles):
    TestToyConformance.profile_dir = toy_profiles
    yield
    TestToyConformance.profile_dir = None


class TestToyConformance(KindConformance):
    kind = "toy"

    @classmethod
    def cases(cls):
        return [("toy-board", "fp32")]


def test_the_profile_is_loaded_validated_and_listed(toy_profiles, tmp_path):
    (p,) = profiles.all_profiles(toy_profiles)
    assert p.id == "toy-board" and p.target == "toy" and p.toy == {"cores": 2, "board": "rev B"}
    assert p.tensorrt is None and p.to_json()["toy"]["cores"] == 2
    assert "toy" in profiles.sections()
    bad = tmp_path / "toy-board.toml"
    bad.write_text(PROFILE.replace("cores = 2", "cores = 0"))
    with pytest.raises(EdgecError, match=r"\[toy\]: key 'cores' = 0: expected a positive number"):
        profiles.load_file(bad)
    bad.write_text(PROFILE.replace("cores = 2", "cores = 2\nclock = 3"))
    with pytest.raises(EdgecError, match="unknown key 'toy.clock'; valid keys: board, cores"):
        profiles.load_file(bad)


def test_without_the_registry_line_the_kind_is_unknown(toy_profiles, monkeypatch, tmp_path):
    monkeypatch.delitem(targets.REGISTRY, "toy")
    with pytest.raises(EdgecError, match="toy-board.toml: unknown key 'toy'; valid keys: arch"):
        profiles.load_file(toy_profiles / "toy-board.toml")
    without_table = tmp_path / "toy-board.toml"
    without_table.write_text(PROFILE[:PROFILE.index("[toy]")])
    with pytest.raises(EdgecError, match="key 'target' = 'toy': expected one of edgetpu, tensorrt, tflite"):
        profiles.load_file(without_table)


def test_the_kinds_refusal_is_one_line_before_any_work(toy_profiles, digits_dir, tmp_path, cli_runner):
    code, _, err = cli_runner("build", digits_dir / "digits_cnn.keras", "--target", toy_profiles / "toy-board.toml",
                              "--precision", "int8", "--calib", digits_dir / "calib.npz", "--out", tmp_path)
    assert code == 2, err
    assert err.startswith("Error: ") and "the toy board runs fp32 only; profile 'toy-board' asked for int8" in err
    assert not any(tmp_path.iterdir())


def test_accuracy_control_and_analysis_say_the_kind_has_none(toy_profiles):
    from edgec import accuracy
    from edgec.config import BuildOptions

    p = profiles.load_file(toy_profiles / "toy-board.toml")
    assert "toy" not in accuracy.controlled_kinds() and "toy" not in accuracy.analyzed_kinds()
    with pytest.raises(EdgecError, match="available for target kinds tflite, tensorrt; profile 'toy-board' is a toy"):
        accuracy.check_request(p, Precision.INT8, BuildOptions(accuracy_control=True))
    with pytest.raises(EdgecError, match="edgec analyze covers target kinds tflite, edgetpu, tensorrt"):
        accuracy.backend_for(p, None, None)


def test_the_build_is_measured_with_what_the_kind_ships(toy_profiles, digits_dir, tmp_path):
    """The toy build, shipped as its manifest says and run by the real agent with LiteRT."""
    import edgec
    from edgec.measure import measure

    result = edgec.build(digits_dir / "digits_cnn.keras", target=str(toy_profiles / "toy-board.toml"),
                         eval=str(digits_dir / "eval.npz"), out=tmp_path / "out")
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["manifest.json", "toy.json", "toy.tflite"]
    assert json.loads((result.out_dir / SIDECAR).read_text()) == {"cores": 2}
    m = measure(result.out_dir, "local", runs=20, warmup=2, store=False)
    assert m.report["runtime"]["name"] == "litert"
    assert m.report["latency_ms"]["median"] > 0 and m.artifact["file"] == "toy.tflite"
