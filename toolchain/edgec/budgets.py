"""The budgets: each limit a build, a CI run or a search can put on an artifact, defined once.

A budget's name is the same everywhere: the keyword in Python (``edgec.build(...,
max_accuracy_drop=1.0)``, ``edgec.search.Request(max_latency_p50_ms=5)``), the key of an
``edgec.toml`` ``[budgets]`` table and, with dashes, the command-line option
(``--max-accuracy-drop``, ``--max-latency-p50-ms``). A latency budget names its statistic:
``max_latency_p50_ms`` limits the median, ``max_latency_p90_ms`` the 90th percentile; the two are
different limits, never one another's spelling.

Where each budget applies (:attr:`Budget.uses`):

* ``build``: checked on the built artifact on the host (``edgec build``, a CI row's build);
* ``ci``: a key of ``edgec.toml``'s ``[budgets]``, judged on the row's figures
  (:mod:`edgec.ci.gates`), some against a baseline run;
* ``search``: a constraint of ``edgec search``; a trial that breaks it is infeasible.

Earlier spellings stay readable where users wrote them (:data:`RENAMED`): ``max_latency_ms``
was search's median latency constraint, and is read as ``max_latency_p50_ms`` there; anywhere
else it is refused with a line naming both latency budgets (:func:`unknown`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

BUILD, CI, SEARCH = "build", "ci", "search"


@dataclasses.dataclass(frozen=True)
class Budget:
    """One budget.

    Attributes:
        name: its key (``max_latency_p90_ms``); ``--max-latency-p90-ms`` on a command line.
        unit: of the limit (``points``, ``bytes``, ``ms``, ``%``, ``x``, ``share``).
        meaning: what the limit bounds, in a phrase.
        figure: the measured figure it reads (a CI row's figure, a trial's result).
        rule: ``max`` / ``min`` (the figure itself), ``growth_pct`` (growth against a baseline),
            ``drop_points`` (accuracy fall against a baseline), ``latency_growth_pct`` (growth
            against a baseline beyond the baseline's spread).
        uses: where it applies: ``build``, ``ci``, ``search``.
        statistic: the latency statistic it limits (``p50``, ``p90``), None for other figures.
        kinds: the target kinds it applies to (empty: all); a kind's own budgets are declared by
            its target (:attr:`edgec.targets.base.Target.budgets`), not here.
        bounds: the range a limit must lie in, if any, and ``bounds_note``: what its ends mean.
        needs_eval: it needs labelled eval data.
        positive: a limit of 0 makes no sense (it must be > 0, not only >= 0).
    """

    name: str
    unit: str
    meaning: str
    figure: str
    rule: str
    uses: tuple[str, ...]
    statistic: str | None = None
    kinds: tuple[str, ...] = ()
    needs_eval: bool = False
    positive: bool = False
    bounds: tuple[float, float] | None = None
    bounds_note: str = ""

    @property
    def option(self) -> str:
        """The command-line option: ``--max-latency-p50-ms``."""
        return "--" + self.name.replace("_", "-")

    @property
    def latency(self) -> bool:
        return self.figure.startswith("latency")

    @property
    def regression(self) -> bool:
        """Judged against a baseline run rather than on the figure alone."""
        return self.rule not in ("max", "min")


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("max_accuracy_drop", "points",
           "accuracy points the artifact may lose against the float model on the eval data",
           "accuracy_drop_points", "max", (BUILD, CI, SEARCH), needs_eval=True),
    Budget("max_bytes", "bytes", "bytes of the deployed artifact", "bytes", "max", (CI, SEARCH), positive=True),
    Budget("min_compression_rate", "x", "float .tflite bytes of the source model / bytes of the deployed artifact",
           "compression_rate", "min", (CI,), positive=True),
    Budget("max_latency_p50_ms", "ms", "median (p50) latency in ms measured on the device", "latency_median_ms",
           "max", (CI, SEARCH), statistic="p50", positive=True),
    Budget("max_latency_p90_ms", "ms", "p90 latency in ms measured on the device", "latency_p90_ms", "max", (CI,),
           statistic="p90", positive=True),
    Budget("max_bytes_growth_pct", "%", "% the artifact may grow over the baseline's", "bytes", "growth_pct", (CI,)),
    Budget("max_accuracy_regression", "points", "accuracy points the artifact may fall below the baseline's",
           "artifact_accuracy", "drop_points", (CI,), needs_eval=True),
    Budget("max_latency_growth_pct", "%", "% the p90 latency may grow beyond the baseline's p90 plus its spread (std)",
           "latency_p90_ms", "latency_growth_pct", (CI,), statistic="p90"),
)}

#: earlier spellings -> (today's name, where the old one is still read)
RENAMED: dict[str, tuple[str, tuple[str, ...]]] = {
    "max_latency_ms": ("max_latency_p50_ms", (SEARCH,)),
}


def used_by(use: str) -> dict[str, Budget]:
    """The budgets of ``build``, ``ci`` or ``search``, in :data:`BUDGETS` order."""
    return {name: b for name, b in BUDGETS.items() if use in b.uses}


def renamed(name: str, use: str) -> str | None:
    """Today's name of an earlier spelling ``name`` that ``use`` still reads, or None."""
    new, uses = RENAMED.get(name, (None, ()))
    return new if use in uses else None


def upgrade(values: dict, use: str) -> dict:
    """``values`` (budget name -> limit) with the earlier spellings ``use`` reads renamed."""
    out = {}
    for name, value in values.items():
        out[renamed(name, use) or name] = value
    return out


def unknown(name: str, use: str, valid: Iterable[str] | None = None) -> str:
    """The message for a budget name that ``use`` does not take: an earlier spelling names its
    replacement, a budget of another use says where it applies, anything else lists the valid
    names."""
    valid = list(valid if valid is not None else used_by(use))
    if name in RENAMED:
        new, _ = RENAMED[name]
        return (f"budget '{name}' is not a name any more: it was search's median latency; write '{new}' "
                f"(the median) or 'max_latency_p90_ms' (the 90th percentile)")
    if name in BUDGETS:
        where = ", ".join(BUDGETS[name].uses)
        return f"budget '{name}' applies to {where}, not {use}; valid here: {', '.join(valid)}"
    return f"unknown budget '{name}'; valid: {', '.join(valid)}"


def check_value(budget: Budget | str, value: float) -> str | None:
    """Why ``value`` cannot be a limit of ``budget`` (a :class:`Budget`, or the name of one of
    :data:`BUDGETS`), or None."""
    budget = budget if isinstance(budget, Budget) else BUDGETS[budget]
    if budget.bounds and not budget.bounds[0] <= value <= budget.bounds[1]:
        low, high = budget.bounds
        return f"expected a {budget.unit} between {low:g} and {high:g}" + (f" ({budget.bounds_note})"
                                                                       if budget.bounds_note else "")
    if budget.positive and not value > 0:
        return "expected a positive number"
    if not value >= 0:
        return "expected a number >= 0"
    return None
