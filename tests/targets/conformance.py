"""The conformance template of a target kind: what every kind must do, one test class per kind.

A kind's test module subclasses :class:`KindConformance`, naming the kind and where its profiles
are; pytest then runs every test below for it, the build one once per (profile, precision) case:
the profile table its target declares is required and checked, the search space takes its
defaults, digits builds and verifies on the host, the manifest records what ships with which
runtime (and :func:`edgec.shipment.plan` ships exactly that), and the kind's figures cover its
budgets.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from edgec import profiles, targets
from edgec.agent import vocab
from edgec.errors import EdgecError
from edgec.util import sha256_file


def cases_of(kind: str, directory: Path | None = None) -> list[tuple[str, str]]:
    """(profile id, precision): each precision the kind's profiles support, once."""
    out, seen = [], set()
    for p in profiles.all_profiles(directory):
        if p.target != kind:
            continue
        for precision in p.precisions:
            if precision not in seen:
                seen.add(precision)
                out.append((p.id, precision))
    return out


class KindConformance:
    """Subclass with ``kind`` (and ``profile_dir`` for profiles outside the bundled ones)."""

    kind: ClassVar[str]
    profile_dir: ClassVar[Path | None] = None

    @classmethod
    def cases(cls) -> list[tuple[str, str]]:
        return cases_of(cls.kind, cls.profile_dir)

    def pytest_generate_tests(self, metafunc):
        if {"profile_id", "precision"} <= set(metafunc.fixturenames):
            metafunc.parametrize(("profile_id", "precision"), self.cases(),
                                 ids=[f"{self.kind}-{precision}" for _, precision in self.cases()])

    def profile(self, profile_id: str):
        if self.profile_dir is None:
            return profiles.get(profile_id)
        return profiles.load_file(Path(self.profile_dir) / f"{profile_id}.toml")

    def test_registered_with_a_runtime_the_agent_knows(self):
        target = targets.get(self.kind)
        assert target.kind == self.kind and target.runtime in vocab.RUNTIMES
        assert self.cases(), f"no profile of kind {self.kind}"

    def test_profiles_carry_and_need_the_kinds_table(self, tmp_path):
        section = targets.target_class(self.kind).section
        for profile_id, _ in self.cases():
            p = self.profile(profile_id)
            if section is None:
                continue
            name, spec = section
            assert set(p.section(name)) <= set(spec) and getattr(p, name) == p.section(name)
            assert p.to_json()[name] == dict(p.section(name))
            # the same file without the table is refused, naming it
            text = Path(p.path).read_text()
            cut = text[:text.index(f"[{name}]")]
            rest = text[text.index(f"[{name}]") + len(name) + 2:]
            later = rest.find("\n[")
            (tmp_path / Path(p.path).name).write_text(cut + (rest[later:] if later >= 0 else ""))
            with pytest.raises(EdgecError, match=rf"target '{self.kind}' needs a \[{name}\] table"):
                profiles.load_file(tmp_path / Path(p.path).name)

    def test_search_space_takes_the_kinds_defaults(self):
        from edgec.search.space import defaults

        p = self.profile(self.cases()[0][0])
        raw = defaults(p)
        for key, value in targets.target_class(self.kind).space.items():
            assert raw[key] == value
        assert raw["precision"] == list(p.precisions)

    def test_build_verify_and_ship(self, profile_id, precision, digits_dir, tmp_path):
        import edgec
        from edgec.shipment import plan

        p = self.profile(profile_id)
        result = edgec.build(digits_dir / "digits_cnn.keras", target=str(p.path), precision=precision,
                             calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"), out=tmp_path)
        m = result.manifest
        target = targets.get(self.kind)
        assert m["target"] == self.kind and m["precision"] == precision and m["runtime"] == target.runtime
        for art in m["artifacts"]:
            assert sha256_file(result.out_dir / art["file"]) == art["sha256"]
        v = m["verification"]
        assert v is not None, "every target verifies at least its primary artifact on the host"
        assert v["agreement"] >= 0.97 and abs(v["accuracy_drop_points"]) <= 1.5
        # what ships is what the kind recorded, for its runtime
        assert target.runtime in m["shipment"]
        for runtime, declared in m["shipment"].items():
            ship = plan(result.out_dir, m, runtime)
            assert set(declared["files"]) <= set(ship.files) and ship.target == declared["run"]
            assert ship.runtime == declared.get("runtime", runtime)
            for remote, local in ship.files.items():
                assert sha256_file(local) == ship.expected[remote]
        figures = target.figures(m)
        for budget in target.budgets:
            assert budget.figure in figures, f"{self.kind} budget {budget.name} has no figure"
