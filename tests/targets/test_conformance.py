"""One conformance suite: every target kind, at every precision a profile of that kind supports,
goes through build -> verify -> ship on digits (the template: :mod:`tests.targets.conformance`).
Each kind has its marker (``-m kind_tensorrt``)."""

from __future__ import annotations

import pytest

from edgec import profiles, targets
from edgec.agent import vocab
from tests.targets.conformance import KindConformance, cases_of


@pytest.mark.kind_tflite
class TestTFLite(KindConformance):
    kind = "tflite"


@pytest.mark.kind_edgetpu
class TestEdgeTPU(KindConformance):
    kind = "edgetpu"


@pytest.mark.kind_tensorrt
class TestTensorRT(KindConformance):
    kind = "tensorrt"


def test_every_kind_has_an_implementation_a_profile_and_a_conformance_class():
    tested = {cls.kind for cls in (TestTFLite, TestEdgeTPU, TestTensorRT)}
    assert tested == set(targets.REGISTRY)
    for kind in targets.REGISTRY:
        assert targets.get(kind).kind == kind and cases_of(kind)
        assert targets.get(kind).runtime in vocab.RUNTIMES


def test_every_profile_target_kind_is_registered():
    for p in profiles.all_profiles():
        assert p.target in targets.REGISTRY


def test_unknown_kind_is_one_clear_error():
    from edgec.errors import EdgecError

    with pytest.raises(EdgecError, match="unknown target kind 'npu'; valid: edgetpu, tensorrt, tflite"):
        targets.get("npu")
