"""One conformance suite: every registered target kind goes through build -> verify on digits."""

from __future__ import annotations

import pytest

import edgec
from edgec import profiles, targets
from edgec.util import sha256_file


def _profile_for(kind: str):
    return next(p for p in profiles.all_profiles() if p.target == kind)


@pytest.mark.parametrize("kind", targets.available())
def test_build_then_verify(kind, digits_dir, tmp_path):
    profile = _profile_for(kind)
    result = edgec.build(digits_dir / "digits_cnn.keras", target=profile.id, calib=str(digits_dir / "calib.npz"),
                         eval=str(digits_dir / "eval.npz"), out=tmp_path)
    m = result.manifest
    assert m["target"] == kind and m["precision"] == profile.default_precision
    assert m["runtime"] == targets.get(kind).runtime
    for art in m["artifacts"]:
        assert sha256_file(result.out_dir / art["file"]) == art["sha256"]
    v = m["verification"]
    assert v is not None, "every target verifies at least its primary artifact on the host"
    assert v["agreement"] >= 0.97 and abs(v["accuracy_drop_points"]) <= 1.5


def test_every_profile_target_kind_is_known():
    for p in profiles.all_profiles():
        assert p.target in profiles.TARGET_KINDS


def test_unavailable_kind_is_clear():
    from edgec.errors import EdgecError

    missing = [k for k in profiles.TARGET_KINDS if k not in targets.available()]
    if not missing:
        pytest.skip("every target kind is implemented")
    with pytest.raises(EdgecError, match="not available yet"):
        targets.get(missing[0], "some-profile")
