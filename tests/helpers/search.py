"""Search test helpers."""

from __future__ import annotations


def bracket_zero_name(trials: int, eta: int) -> str:
    """A study name whose first trials all fall into Hyperband's bracket 0 (two brackets)."""
    from edgec.search import hyperband

    return next(f"hb{i}" for i in range(1000)
                if all(hyperband.bracket_of(f"hb{i}", n, 2, eta) == 0 for n in range(trials)))
