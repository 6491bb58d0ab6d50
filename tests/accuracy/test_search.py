"""The control loop on a scripted backend: rank, revert in order, step back and re-rank when a step
hurts, prune what is not needed, prefer the set with the fewest float MACs, stop at all ops but one
and keep the best found."""

from __future__ import annotations

import numpy as np

from edgec.accuracy.base import Candidate, QuantOp, layers_named
from edgec.accuracy.metric import Score
from edgec.accuracy.search import Evaluator, control

FLOAT = 0.95


class Scripted:
    """A backend whose 'artifact' is the set of float ops, scored by a function of that set."""

    kind = "scripted"

    def __init__(self, ops, accuracy, macs=None):
        macs = macs or {}
        self.ops = [QuantOp(id=o, index=k, op="CONV_2D", layers=[o], macs=macs.get(o, 100)) for k, o in enumerate(ops)]
        self.accuracy = accuracy
        self.built = []

    def candidates(self):
        return [Candidate((o.id,), "op", o.id) for o in self.ops]

    def build(self, float_ops):
        self.built.append(frozenset(float_ops))
        return frozenset(float_ops)

    def run(self, artifact, x):
        return [np.asarray([self.accuracy(artifact)])], ["out"]

    def size(self, artifact):
        return 1000 + 100 * len(artifact)


class ScoreOnly:
    """Metric stand-in: the 'output' is the accuracy itself; SQNR grows with it."""

    def score(self, outs, names):
        value = float(outs[0][0])
        return Score(value, round((FLOAT - value) * 100, 4), 10 * value, {"out": 10 * value})


def run(ops, accuracy, budget=1.0, candidates=None, macs=None):
    backend = Scripted(ops, accuracy, macs)
    evaluate = Evaluator(backend, ScoreOnly(), np.zeros(1))
    result = control(evaluate, candidates or backend.candidates(), [o.id for o in backend.ops], budget)
    return result, backend


def test_plain_within_budget_keeps_everything_int8():
    result, backend = run("abc", lambda s: 0.945)
    assert result.met and result.chosen == frozenset() and result.steps == [] and backend.built == [frozenset()]


def test_reverts_in_rank_order_until_met():
    gains = {"a": 0.00, "b": 0.04, "c": 0.02, "d": 0.01}
    result, _ = run("abcd", lambda s: 0.88 + sum(gains[o] for o in s), budget=0.5)
    assert [c.ops[0] for c, _ in result.ranking] == ["b", "c", "d", "a"]
    assert result.met and result.chosen == {"b", "c", "d"}  # 0.88 + 0.07 = float; b+c leaves 1 point
    assert [s["action"] for s in result.steps] == ["kept", "kept", "kept"]


def test_prunes_ops_the_budget_does_not_need():
    # c alone helps a little; b and d together fix it, so c is not needed once they are float
    def accuracy(s):
        if {"b", "d"} <= s:
            return 0.95
        return 0.90 + (0.01 if "c" in s else 0) + (0.005 if "b" in s else 0) + (0.004 if "d" in s else 0)

    result, _ = run("abcd", accuracy)
    assert result.met and result.chosen == {"b", "d"}
    assert result.steps[-1]["action"] == "pruned" and result.steps[-1]["candidate"].ops == ("c",)


def test_a_step_that_hurts_is_undone_and_the_rest_reranked():
    # alone: c > a > b; but on top of c, a hurts while b completes the fix
    def accuracy(s):
        if s == {"c", "b"}:
            return 0.95
        if s == {"c", "a"}:
            return 0.85
        return 0.90 + 0.02 * ("c" in s) + 0.01 * ("a" in s) + 0.005 * ("b" in s)

    result, _ = run("abcd", accuracy)
    actions = [(s["candidate"].ops, s["action"]) for s in result.steps]
    assert actions[:3] == [(("c",), "kept"), (("a",), "undone"), (("b",), "kept")]
    assert result.met and result.chosen == {"b", "c"}


def test_tensor_groups_find_what_no_single_op_does():
    def accuracy(s):
        return 0.95 if {"a", "b"} <= s else 0.80

    backend_ops = "abcd"
    singles = [Candidate((o,), "op", o) for o in backend_ops]
    groups = [Candidate(("a", "b"), "tensor", "a output (with b)")]
    result, _ = run(backend_ops, accuracy, candidates=singles + groups)
    assert result.met and result.chosen == {"a", "b"} and len(result.steps) == 1


def test_unreachable_budget_stops_at_all_but_one_and_keeps_the_best():
    def accuracy(s):
        return 0.50 + (0.01 if s == {"a", "b"} else 0.0)

    result, backend = run("abcd", accuracy)
    assert not result.met
    assert result.chosen == {"a", "b"} and result.final.score.value == 0.51
    assert max(len(s) for s in backend.built) == 3  # never all four ops in float
    assert all(len(s["float_ops"]) <= 3 for s in result.steps)


def test_the_fewest_float_macs_win_over_the_most_sensitive_op():
    # 'a' alone meets the budget and ranks first, but costs 10x the MACs of 'b' and 'c' together
    def accuracy(s):
        if "a" in s or {"b", "c"} <= s:
            return 0.95
        return 0.92 + 0.01 * ("b" in s) + 0.005 * ("c" in s)

    result, _ = run("abcd", accuracy, macs={"a": 1000, "b": 50, "c": 50, "d": 10})
    assert [c.ops[0] for c, _ in result.ranking][0] == "a"
    assert result.met and result.chosen == {"b", "c"}
    assert result.steps[-1]["action"] == "kept (fewest MACs)"


def test_each_configuration_is_measured_once():
    result, backend = run("abcd", lambda s: 0.80 + 0.001 * len(s))
    assert len(backend.built) == len(set(backend.built)) == result.evaluations


def test_layer_names_come_from_the_leftmost_path_component():
    layers = ["conv2d", "batch_normalization", "add", "add_1", "re_lu_4", "logits"]
    assert layers_named(["m/conv2d/Conv2D;m/batch_normalization/FusedBatchNormV3"], layers) == \
        ["conv2d", "batch_normalization"]
    # the TF op 'add' inside layer add_1 is not the layer 'add'
    assert layers_named(["m/re_lu_4/Relu;m/add_1/add"], layers) == ["add_1", "re_lu_4"]
    assert layers_named(["StatefulPartitionedCall:0", "m/logits/MatMul"], layers) == ["logits"]
