"""Sensitivity ranking and the accuracy-control loop, over any backend (:mod:`edgec.accuracy.base`).

Sensitivity of an op: the metric with that op alone left in float, minus the plain int8 metric
(points); SQNR of the metric's output orders ops whose metric is the same. The control loop is
NNCF's ``quantize_with_accuracy_control``: rank the candidates by sensitivity, revert them to float
one by one in that order, re-measuring after each step, and stop once the drop is within the
budget. A step that makes the metric worse is undone and the remaining candidates are ranked again
on top of what is already float (the next step is then kept, so the loop always moves on). Once
the budget is met, every op kept float is tried back in int8, last added first, and stays int8
when the budget still holds: the result keeps no op in float it does not need. At most all ops but
one are left in float; when even that misses the budget, the best configuration measured is the
result.

Sensitivity says nothing of what an op costs, so a second search looks for the set with the fewest
MACs in float that meets the budget, cheaper than the first one's: small sets of the candidates
with the most gain per MAC in order of their MACs, then forward selection by gain per MAC
(:func:`_cheapest`). The cheaper of the two is kept, and its ops are tried back in int8 again, the
most MACs first.

Every configuration is measured once (cached), on the same data, so a search is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgec.accuracy.base import Backend, Candidate
from edgec.accuracy.metric import Metric, Score


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One configuration measured: the ops left in float, the score, the artifact's size."""

    float_ops: frozenset[str]
    score: Score
    bytes: int


class Evaluator:
    """Build, run and score configurations, each once."""

    def __init__(self, backend: Backend, metric: Metric, x: np.ndarray, task=None):
        self.backend, self.metric, self.x = backend, metric, x
        self.task = task
        self.cache: dict[frozenset[str], Evaluation] = {}

    def __call__(self, float_ops: Iterable[str]) -> Evaluation:
        key = frozenset(float_ops)
        if key not in self.cache:
            artifact = self.backend.build(key)
            outs, names = self.backend.run(artifact, self.x)
            self.cache[key] = Evaluation(key, self.metric.score(outs, names), self.backend.size(artifact))
            if self.task is not None:
                self.task.info(f"{len(self.cache)} measured")
        return self.cache[key]

    @property
    def count(self) -> int:
        return len(self.cache)


def rank(evaluate: Evaluator, candidates: list[Candidate], base: frozenset[str] = frozenset(),
         task=None) -> list[tuple[Candidate, Evaluation]]:
    """Candidates with the evaluation of ``base`` plus each, best first (graph order among equals)."""
    measured = []
    for candidate in candidates:
        measured.append((candidate, evaluate(base | set(candidate.ops))))
        if task is not None:
            task.advance()
    return sorted(measured, key=lambda item: item[1].score.key(), reverse=True)


@dataclasses.dataclass
class ControlResult:
    """What the control loop chose, and how.

    Attributes:
        met: the final drop is within the budget.
        plain: the plain int8 model (no op in float).
        final: the chosen configuration.
        ranking: the first ranking (empty when the plain model met the budget).
        steps: one entry per measured step: the candidate, the ops float after it, its score, and
            whether it was kept, undone (and the rest re-ranked) or pruned back to int8.
        evaluations: configurations measured.
    """

    met: bool
    budget: float
    plain: Evaluation
    final: Evaluation
    ranking: list[tuple[Candidate, Evaluation]]
    steps: list[dict[str, Any]]
    evaluations: int

    @property
    def chosen(self) -> frozenset[str]:
        return self.final.float_ops


def control(evaluate: Evaluator, candidates: list[Candidate], ops: list[str], budget: float,
            progress=None) -> ControlResult:
    """Keep the fewest ops in float that bring the drop within ``budget`` points (see the module doc).

    Args:
        evaluate: measures a configuration (a set of op ids left in float).
        candidates: what may be reverted (single ops, tensor groups), in graph order.
        ops: every quantizable op id, in graph order.
        budget: the largest accepted drop, in points.
        progress: shows the ranking and the steps.
    """
    from edgec.progress import Progress

    progress = progress or Progress(enabled=False)
    n_ops, position = len(ops), {op_id: k for k, op_id in enumerate(ops)}
    plain = evaluate(())
    if plain.score.drop_points <= budget:
        return ControlResult(True, budget, plain, plain, [], [], evaluate.count)
    with progress.task("accuracy control: rank ops by sensitivity", total=len(candidates)) as task:
        ranking = rank(evaluate, candidates, task=task)
    steps: list[dict[str, Any]] = []
    queue = [c for c, _ in ranking]
    current, now = frozenset(), plain
    stepped_back = met = False
    with progress.task("accuracy control: revert ops to float") as task:
        evaluate.task = task
        while queue:
            candidate = queue.pop(0)
            trial = current | set(candidate.ops)
            if trial == current or len(trial) >= n_ops:  # keep at least one op in int8
                continue
            result = evaluate(trial)
            step = {"candidate": candidate, "float_ops": trial, "score": result.score, "action": "kept"}
            steps.append(step)
            if result.score.drop_points <= budget:
                current, now, met = trial, result, True
                break
            if result.score.value >= now.score.value or stepped_back:
                current, now, stepped_back = trial, result, False
                continue
            step["action"] = "undone"  # worse: step back and rank the rest on top of what is float
            queue = [c for c, _ in rank(evaluate, queue, current)]
            stepped_back = True
        if met:
            latest_first = sorted(current, key=lambda i: (_added_at(steps, i), position[i]), reverse=True)
            current, now = _prune(evaluate, current, now, latest_first, budget, steps)
        else:
            int8 = [e for e in evaluate.cache.values() if len(e.float_ops) < n_ops]
            now = max(int8, key=lambda e: (e.score.key(), -len(e.float_ops)))
        # the sensitivity order ignores what an op costs: search again for fewer float MACs (when
        # even all ops but one in float missed the budget, fewer will not meet it either)
        if met:
            macs = _macs(evaluate, ops)
            current, now = _prune(evaluate, current, now, _most_macs_first(current, macs), budget, steps)
            cheap, cheap_steps = _cheapest(evaluate, ranking, plain, macs, budget, n_ops, _cost(current, macs))
            if cheap is not None and _cost(cheap.float_ops, macs) < _cost(now.float_ops, macs):
                current, now = cheap.float_ops, cheap
                steps += cheap_steps
                current, now = _prune(evaluate, current, now, _most_macs_first(current, macs), budget, steps)
        evaluate.task = None
    return ControlResult(met, budget, plain, now, ranking, steps, evaluate.count)


def _macs(evaluate: Evaluator, ops: list[str]) -> dict[str, int]:
    by_id = {o.id: int(getattr(o, "macs", 0) or 0) for o in getattr(evaluate.backend, "ops", [])}
    return {op_id: by_id.get(op_id, 0) for op_id in ops}


def _cost(float_ops: Iterable[str], macs: dict[str, int]) -> tuple[int, int]:
    """What keeping ``float_ops`` in float costs: their MACs, then how many ops (ops without MACs,
    an Add or a pooling, still cost a float kernel and its quantize/dequantize pair)."""
    ops = set(float_ops)
    return sum(macs.get(o, 0) for o in ops), len(ops)


#: the cost-ordered search looks at sets of up to this many of the most efficient helpful candidates
CHEAP_CANDIDATES, CHEAP_SET, CHEAP_EVALUATIONS = 10, 3, 80


def _cheapest(evaluate: Evaluator, ranking, plain: Evaluation, macs: dict[str, int], budget: float,
              n_ops: int, bound: tuple[int, int]) -> tuple[Evaluation | None, list[dict[str, Any]]]:
    """The set of float ops with the fewest MACs that meets the budget, among the candidates that
    help alone (their metric above plain int8).

    Sets of up to :data:`CHEAP_SET` of the :data:`CHEAP_CANDIDATES` candidates with the most gain per
    MAC (an op without MACs counted as 1 % of the mean op's) are measured in order of their MACs,
    cheaper than ``bound`` only, at most :data:`CHEAP_EVALUATIONS` of them: the first that meets the
    budget is the cheapest of them. Failing that, a greedy pass adds the candidates in order of gain
    per MAC, each kept when it improves on what is float so far.
    """
    import itertools

    total = sum(macs.values())
    floor = max(total / max(len(macs), 1) * 0.01, 1.0)
    helpful = [(c, e) for c, e in ranking if e.score.key() > plain.score.key()]

    def efficiency(item):
        c, e = item
        gain = e.score.value - plain.score.value
        return (gain / max(_cost(c.ops, macs)[0], floor), e.score.sqnr_db - plain.score.sqnr_db)

    order = [c for c, _ in sorted(helpful, key=efficiency, reverse=True)]
    sets = {}
    for size in range(1, CHEAP_SET + 1):
        for combo in itertools.combinations(order[:CHEAP_CANDIDATES], size):
            ops = frozenset(o for c in combo for o in c.ops)
            if len(ops) < n_ops and ops not in sets:
                sets[ops] = combo
    steps: list[dict[str, Any]] = []
    measured = 0
    for ops in sorted(sets, key=lambda o: (_cost(o, macs), sorted(o))):
        if _cost(ops, macs) >= bound:
            break
        if measured >= CHEAP_EVALUATIONS:
            break
        fresh = ops not in evaluate.cache
        result = evaluate(ops)
        measured += fresh
        if result.score.drop_points <= budget:
            label = " + ".join(c.label or c.ops[0] for c in sets[ops])
            steps.append({"candidate": Candidate(tuple(sorted(ops)), "set", label), "float_ops": ops,
                          "score": result.score, "action": "kept (fewest MACs)"})
            return result, steps
    return _greedy_per_mac(evaluate, [c for c, _ in ranking], plain, macs, floor, budget, n_ops, bound, steps)


#: at most this many configurations measured by the greedy pass per MAC
GREEDY_EVALUATIONS = 400


def _greedy_per_mac(evaluate: Evaluator, candidates: list[Candidate], plain: Evaluation, macs: dict[str, int],
                    floor: float, budget: float, n_ops: int, bound: tuple[int, int],
                    steps: list[dict[str, Any]]) -> tuple[Evaluation | None, list[dict[str, Any]]]:
    """Forward selection by gain per MAC: every remaining candidate measured on top of what is float
    so far, the one with the most metric gain per MAC added (SQNR gain per MAC where no candidate
    moves the metric: the continuous measure shows which error is cheapest to remove), until the
    budget is met, nothing gains, or the set costs as much as ``bound``."""
    current, now, measured = frozenset(), plain, 0
    remaining = list(candidates)
    while remaining and measured < GREEDY_EVALUATIONS:
        best, best_key = None, None
        for candidate in list(remaining):
            trial = current | set(candidate.ops)
            if trial == current or len(trial) >= n_ops or _cost(trial, macs) >= bound:
                remaining.remove(candidate)
                continue
            measured += trial not in evaluate.cache
            result = evaluate(trial)
            extra = max(_cost(trial, macs)[0] - _cost(current, macs)[0], floor)
            key = ((result.score.value - now.score.value) / extra, (result.score.sqnr_db - now.score.sqnr_db) / extra)
            if key > (0.0, 0.0) and (best_key is None or key > best_key):
                best, best_key = (candidate, trial, result), key
        if best is None:
            break
        candidate, current, now = best
        remaining.remove(candidate)
        steps.append({"candidate": candidate, "float_ops": current, "score": now.score, "action": "kept (by MACs)"})
        if now.score.drop_points <= budget:
            return now, steps
    return None, steps


def _most_macs_first(ops: frozenset[str], macs: dict[str, int]) -> list[str]:
    return sorted(ops, key=lambda i: (-macs.get(i, 0), i))


def _prune(evaluate: Evaluator, current: frozenset[str], now: Evaluation, order: list[str], budget: float,
           steps: list[dict[str, Any]]) -> tuple[frozenset[str], Evaluation]:
    """Each op kept float tried back in int8, in ``order``; it stays int8 while the budget holds."""
    for op_id in order:
        trial = current - {op_id}
        result = evaluate(trial)
        if result.score.drop_points <= budget:
            steps.append({"candidate": Candidate((op_id,), "op"), "float_ops": trial, "score": result.score,
                          "action": "pruned"})
            current, now = trial, result
    return current, now


def _added_at(steps: list[dict[str, Any]], op_id: str) -> int:
    return next((k for k, s in enumerate(steps) if s["action"] == "kept" and op_id in s["float_ops"]), -1)


def analyze(backend: Backend, metric: Metric, x: np.ndarray, *, stats: bool = True, progress=None) -> dict[str, Any]:
    """Per quantizable op, in graph order: scales, parameters, MACs, the per-layer error of the plain
    int8 model, and the sensitivity (the metric with that op alone left in float, against plain
    int8); where the format quantizes an op's output in the op itself (TFLite), also the metric with
    the op's output tensor kept float (the op and its consumers in float).

    Returns:
        A JSON-ready dict: ``metric``, ``plain``, ``ops`` (graph order, each with its ``rank``),
        ``ranking`` (op ids, most sensitive first), ``evaluations``.
    """
    from edgec.progress import Progress

    progress = progress or Progress(enabled=False)
    evaluate = Evaluator(backend, metric, x)
    plain = evaluate(())
    candidates = backend.candidates()
    singles = [c for c in candidates if c.kind == "op"]
    groups = {c.ops[0]: c for c in candidates if c.kind == "tensor"}
    with progress.task("analyze: each op alone in float", total=len(singles) + len(groups)) as task:
        ranking = rank(evaluate, singles, task=task)
        grouped = {}
        for op_id, candidate in groups.items():
            grouped[op_id] = (candidate, evaluate(candidate.ops))
            task.advance()
    layer_stats = {}
    if stats:
        with progress.task("analyze: per-layer error (int8 vs float, same input)"):
            layer_stats = backend.layer_stats(x)
    order = {c.ops[0]: k for k, (c, _) in enumerate(ranking)}
    alone = {c.ops[0]: e for c, e in ranking}
    rows = []
    for op in backend.ops:
        row = op.describe()
        row.update(layer_stats.get(op.id, {"rmse_steps": None, "sqnr_db": None}))
        e = alone[op.id]
        row["rank"] = order[op.id] + 1
        row["float_alone"] = e.score.to_json()
        row["sensitivity_points"] = round((e.score.value - plain.score.value) * 100.0, 4)
        row["sensitivity_sqnr_db"] = _gain(e.score.sqnr_db, plain.score.sqnr_db)
        if op.id in grouped:
            candidate, g = grouped[op.id]
            row["output_float"] = {"ops": list(candidate.ops), "layers": candidate.label,
                                   "sensitivity_points": round((g.score.value - plain.score.value) * 100.0, 4),
                                   **g.score.to_json()}
        rows.append(row)
    total_macs = sum(o.macs for o in backend.ops)
    return {
        "kind": backend.kind,
        "metric": metric.describe(),
        "plain": {**plain.score.to_json(), "bytes": plain.bytes},
        "ops": rows,
        "ranking": [c.ops[0] for c, _ in ranking],
        "totals": {"ops": len(rows), "params": sum(o.params for o in backend.ops), "macs": total_macs},
        "evaluations": evaluate.count,
    }


def _gain(after: float, before: float) -> float | None:
    if not (np.isfinite(after) and np.isfinite(before)):
        return None
    return round(after - before, 3)
