"""One conformance suite: every target kind, at every precision a profile of that kind supports,
goes through build -> verify on digits. Each kind has its marker (``-m kind_tensorrt``)."""

from __future__ import annotations

import pytest

import edgec
from edgec import profiles, targets
from edgec.agent import vocab
from edgec.util import sha256_file


def _cases():
    cases = []
    for kind in vocab.TARGET_KINDS:
        seen = set()
        for p in profiles.all_profiles():
            if p.target != kind:
                continue
            for precision in p.precisions:
                if precision not in seen:
                    seen.add(precision)
                    cases.append(pytest.param(kind, p.id, precision, id=f"{kind}-{precision}",
                                              marks=getattr(pytest.mark, f"kind_{kind}")))
    return cases


CASES = _cases()


def test_every_kind_has_an_implementation_and_a_case():
    assert tuple(targets.REGISTRY) == vocab.TARGET_KINDS
    assert {c.values[0] for c in CASES} == set(vocab.TARGET_KINDS)
    for kind in vocab.TARGET_KINDS:
        assert targets.get(kind).kind == kind


@pytest.mark.parametrize(("kind", "profile_id", "precision"), CASES)
def test_build_then_verify(kind, profile_id, precision, digits_dir, tmp_path):
    result = edgec.build(digits_dir / "digits_cnn.keras", target=profile_id, precision=precision,
                         calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"), out=tmp_path)
    m = result.manifest
    assert m["target"] == kind and m["precision"] == precision
    assert m["runtime"] == targets.get(kind).runtime
    for art in m["artifacts"]:
        assert sha256_file(result.out_dir / art["file"]) == art["sha256"]
    v = m["verification"]
    assert v is not None, "every target verifies at least its primary artifact on the host"
    assert v["agreement"] >= 0.97 and abs(v["accuracy_drop_points"]) <= 1.5


def test_every_profile_target_kind_is_known():
    for p in profiles.all_profiles():
        assert p.target in vocab.TARGET_KINDS


def test_unknown_kind_is_one_clear_error():
    from edgec.errors import EdgecError

    with pytest.raises(EdgecError, match="unknown target kind 'npu'; valid: edgetpu, tensorrt, tflite"):
        targets.get("npu")
