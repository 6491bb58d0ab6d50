"""Remedies in order of cost, then float ops: what ``--accuracy-control`` does for TFLite targets,
and what ``edgec build`` does with remedy flags alone.

The loop starts from the remedies the flags force, measures the int8 model on the eval data, and
while the drop is over the budget adds the next remedy in :data:`ORDER` (for ``range``: the better
of ``percentile`` and ``mse``), keeping it only when the metric improves, and goes through the
order a second time. When the integer remedies
fall short, 16-bit activations (the whole model) are tried; then the float-op search
(:func:`edgec.accuracy.search.control`) runs on the int8 model with the remedies kept. When 16x8
meets the budget, the float-op search runs too, and of the two that meet it the one with the lower
LiteRT latency on this host is kept (on the bench's mini-Xception, LiteRT ran the 16x8 model 55 to
230 times slower than its int8 twin, while three float ops cost about 4 %). Every model
measured is listed in the manifest with its drop (``accuracy_control.remedies.tried``), and every
layer kept in 16-bit or float is priced in LiteRT latency on this host.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np

from edgec.accuracy.remedies import ORDER, Remedies, describe
from edgec.accuracy.remedies import offered as offered_for
from edgec.accuracy.remedies.apply import KerasVariants, RangedBackend, int16_model

log = logging.getLogger(__name__)

LATENCY_RUNS = 50
LATENCY_ROUNDS = 5


def int8_bytes(model, calib, method: str | None, io_dtype: str, names: list[str]) -> tuple[bytes, dict | None]:
    """The converter's int8 model of ``model``, with activation ranges by ``method`` (None: min/max)."""
    from tensorflow.lite.python.convert import mlir_quantize

    from edgec.accuracy.remedies import ranges
    from edgec.accuracy.tflite import deduplicate, quiet
    from edgec.config import Precision
    from edgec.model_io import SignatureModel, named_function
    from edgec.targets.tflite import convert, representative_dataset
    from edgec.tfcompat import tf_and_keras
    from edgec.tflite_model import reorder_outputs

    if not method:
        return convert(model, Precision.INT8, calib=calib, io_dtype=io_dtype, output_names=names), None
    tf, _ = tf_and_keras()
    from edgec.progress import Progress

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [named_function(model, None, names)], model.loaded if isinstance(model, SignatureModel) else model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = representative_dataset(calib, Progress(enabled=False))
    converter._experimental_calibrate_only = True  # noqa: SLF001 (the QuantizationDebugger's own route)
    io = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
    with quiet():
        calibrated = converter.convert()
        calibrated, report = ranges.apply(bytes(calibrated), calib.x, method)
        content = mlir_quantize(calibrated, input_data_type=io, output_data_type=io)
    return reorder_outputs(deduplicate(bytes(content)), names), report


def latency_ms(models: dict[str, bytes], runs: int = LATENCY_RUNS, rounds: int = LATENCY_ROUNDS) -> dict[str, float]:
    """LiteRT median latency (ms, batch 1, one thread) of each model, measured in interleaved rounds."""
    from ai_edge_litert.interpreter import Interpreter

    from edgec.util import capture_native_stderr

    interpreters = {}
    for name, content in models.items():
        with capture_native_stderr():
            it = Interpreter(model_content=content, num_threads=1)
        inp = it.get_input_details()[0]
        if int(inp["shape_signature"][0]) == -1:
            it.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        for _ in range(5):
            it.invoke()
        interpreters[name] = it
    medians: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for name, it in interpreters.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - t0)
            medians[name].append(statistics.median(times) * 1000.0)
    return {n: round(statistics.median(v), 5) for n, v in medians.items()}


class Trials:
    """Measures remedy combinations on the eval data, each once.

    Args:
        model: the float tf-keras model.
        calib: the calibration dataset (ranges, and the weight remedies' data).
        metric: :class:`edgec.accuracy.metric.Metric` (``None``: only :meth:`content` is used).
        io_dtype, output_names, seed: as the build's.
    """

    def __init__(self, model, calib, metric, *, io_dtype: str = "int8", output_names: list[str], seed: int = 0):
        self.calib, self.metric, self.io_dtype, self.names = calib, metric, io_dtype, output_names
        self.variants = KerasVariants(model, calib.x, seed)
        self.cache: dict[Remedies, tuple[Any, bytes, dict]] = {}
        self.order: list[Remedies] = []
        self.kept: set[Remedies] = set()  # the combinations the search moved to

    @classmethod
    def of(cls, ctx, metric) -> Trials:
        return cls(ctx.model, ctx.calib, metric, io_dtype=ctx.profile.int8_io, output_names=ctx.output_names,
                   seed=ctx.options.seed)

    def content(self, r: Remedies) -> tuple[bytes, dict]:
        model, reports = self.variants.get(r)
        if r.int16:
            return int16_model(model, self.calib, self.names), reports
        content, rep = int8_bytes(model, self.calib, r.range, self.io_dtype, self.names)
        return content, ({**reports, "range": rep} if rep else reports)

    def __call__(self, r: Remedies):
        if r not in self.cache:
            from edgec.targets.tflite import LiteRTRunner

            content, reports = self.content(r)
            runner = LiteRTRunner(content)
            score = self.metric.score(runner(self.metric.ref.data.x), runner.output_names)
            self.cache[r] = (score, content, reports)
            self.order.append(r)
            log.info("remedies %s: drop %.2f points", r.label(), score.drop_points)
        return self.cache[r]

    def rows(self, kept: set[Remedies]) -> list[dict[str, Any]]:
        """Every combination measured, in order, with its drop and whether the search kept it."""
        return [{"remedies": r.names(), "label": r.label(), "drop_points": self.cache[r][0].drop_points,
                 "value": round(self.cache[r][0].value, 6), "bytes": len(self.cache[r][1]), "kept": r in kept}
                for r in self.order]


def search(ctx, forced: Remedies, budget: float, trials=None) -> tuple[Remedies, Trials, bool]:
    """The cheapest remedies (in :data:`ORDER`) on top of ``forced`` that meet ``budget``, or the best
    integer combination found; whether it met the budget. ``trials`` measures a combination
    (default: :class:`Trials`, the TFLite int8 model)."""
    from edgec.accuracy.metric import Metric

    trials = trials if trials is not None else Trials.of(ctx, Metric(ctx.reference))
    offered = offered_for(ctx.profile.target, ctx.calib.x, ctx.model)
    if forced.int16:
        score = trials(forced)[0]
        trials.kept.add(forced)
        return forced, trials, score.drop_points <= budget
    current = forced
    score = trials(current)[0]
    trials.kept.add(current)
    # a second pass: a remedy that did not help on its own turn may on top of those kept after it
    for name in ORDER + ORDER:
        if score.drop_points <= budget:
            break
        if name not in offered or name == "int16" or getattr(current, name):
            continue
        options = [current.with_(range=m) for m in ("percentile", "mse")] if name == "range" \
            else [current.with_(**{name: True})]
        best = max(options, key=lambda r: trials(r)[0].key())
        if trials(best)[0].key() > score.key():
            current, score = best, trials(best)[0]
            trials.kept.add(current)
    if score.drop_points > budget and "int16" in offered:
        wide = current.with_(int16=True, range=None)
        if trials(wide)[0].drop_points <= budget:
            trials.kept.add(wide)
            return wide, trials, True
    return current, trials, score.drop_points <= budget


def tflite_build(ctx, artifact: str) -> tuple[bytes, dict[str, Any]]:
    """The TFLite artifact of an int8 build with remedy flags and/or ``--accuracy-control``."""
    forced = Remedies.from_options(ctx.options)
    if not ctx.options.accuracy_control:
        trials = Trials.of(ctx, None)
        content, reports = trials.content(forced)
        ctx.extra["remedies"] = describe(forced, reports)
        return content, {"activations": "int16" if forced.int16 else "int8"}
    budget = float(ctx.options.max_accuracy_drop)
    chosen, trials, met = search(ctx, forced, budget)
    score, content, reports = trials(chosen)
    plain_score, plain_content, _ = trials(trials.order[0])
    section: dict[str, Any]
    fallback, priced = None, None
    if met and chosen.int16 and not forced.int16:
        # 16x8 met the budget, and so may a few float ops on the int8 remedies: keep the faster
        int8_remedies = chosen.with_(int16=False)
        int8_remedies, candidate = _best_fallback(ctx, trials, int8_remedies, forced, budget, artifact)
        if candidate[1]["met"]:
            lat = latency_ms({"int16": content, "float": candidate[0]})
            priced = {"int16_ms": lat["int16"], "float_fallback_ms": lat["float"],
                      "float_fallback_ops": len(candidate[1]["float_ops"]),
                      "float_fallback_macs_share": candidate[1]["float_macs_share"]}
            if lat["float"] < lat["int16"]:
                trials.kept.discard(chosen)
                chosen, fallback = int8_remedies, candidate
                score, content, reports = trials(chosen)
            priced["kept"] = "float fallback" if fallback else "int16"
    if fallback is not None:
        content, section, info = fallback
    elif met or chosen.int16:
        section = integer_section(ctx, trials, chosen, met, budget, artifact)
        info: dict[str, Any] = {"activations": "int16" if chosen.int16 else "int8"}
        if chosen.int16:
            int8_content = trials(chosen.with_(int16=False))[1]
            lat = latency_ms({"int16": content, "int8": int8_content})
            section["latency_cost"] = [{"what": "whole model, 16-bit activations", "layers": "all",
                                        "ms": lat["int16"], "int8_ms": lat["int8"],
                                        "cost_ms": round(lat["int16"] - lat["int8"], 5)}]
    else:
        chosen, (content, section, info) = _best_fallback(ctx, trials, chosen, forced, budget, artifact)
        score, _, reports = trials(chosen)
    section["remedies"] = {"chosen": chosen.names(), "tried": trials.rows(trials.kept), "reports": reports,
                           "offered": list(offered_for(ctx.profile.target, ctx.calib.x, ctx.model))}
    if priced is not None:
        section["remedies"]["int16_or_float"] = priced
    section["before"] = {**plain_score.to_json(), "bytes": len(plain_content)}
    section["size_change_bytes"] = section["after"]["bytes"] - len(plain_content)
    section["size_change_share"] = round(section["size_change_bytes"] / len(plain_content), 6)
    ctx.extra["accuracy_control"] = section
    ctx.extra["remedies"] = describe(chosen, reports)
    return content, info


def _macs_of(content: bytes) -> tuple[int, int]:
    from edgec import tflite_model
    from edgec.accuracy.tflite import op_macs

    m = tflite_model.load(content)
    compute = [op for op in m.operators if op.op not in ("QUANTIZE", "DEQUANTIZE")]
    return sum(op_macs(m, op) for op in compute), len(compute)


def integer_section(ctx, trials: Trials, chosen: Remedies, met: bool, budget: float, artifact: str) -> dict[str, Any]:
    score, content, _ = trials(chosen)
    macs, ops = _macs_of(content)
    return {"artifact": artifact, "target_kind": "tflite", "metric": trials.metric.describe(), "budget_points": budget,
            "met": met, "after": {**score.to_json(), "bytes": len(content)}, "float_ops": [], "float_params": 0,
            "float_params_share": 0.0, "float_macs": 0, "float_macs_share": 0.0,
            "int16_macs_share": 1.0 if chosen.int16 else 0.0, "total_macs": macs, "quantizable_ops": ops,
            "evaluations": len(trials.order), "ranking": [], "steps": [], "latency_cost": []}


def _best_fallback(ctx, trials: Trials, chosen: Remedies, forced: Remedies, budget: float, artifact: str):
    """The float-op search on the int8 model with the kept remedies and, when the remedies added
    any, on the one without them: the greedy search is not monotone (fewer float ops can do on the
    model the remedies did not touch). Kept: the one that meets the budget with the smaller share
    of MACs in float (then the smaller drop)."""
    found = [(chosen, _float_fallback(ctx, trials, chosen, budget, artifact))]
    if chosen != forced:
        found.append((forced, _float_fallback(ctx, trials, forced, budget, artifact)))
    best = min(found, key=lambda f: (not f[1][1]["met"], f[1][1]["float_macs_share"],
                                     f[1][1]["after"]["drop_points"]))
    for r, (_, section, _) in found:
        if r != best[0] and r != forced:
            trials.kept.discard(r)
        section["fallback_on"] = r.label()
    best[1][1]["fallbacks"] = [{"on": r.label(), "met": sec["met"], "float_ops": len(sec["float_ops"]),
                                "float_macs_share": sec["float_macs_share"],
                                "drop_points": sec["after"]["drop_points"]} for r, (_, sec, _) in found]
    return best


def _float_fallback(ctx, trials: Trials, chosen: Remedies, budget: float, artifact: str):
    import os

    from edgec.accuracy.report import control_section
    from edgec.accuracy.search import Evaluator, control

    model, _ = trials.variants.get(chosen)
    threads = min(ctx.profile.threads or os.cpu_count() or 1, os.cpu_count() or 1)
    backend = RangedBackend(model, ctx.calib, method=chosen.range, io_dtype=ctx.profile.int8_io,
                            output_names=ctx.output_names, threads=threads, progress=ctx.progress)
    evaluate = Evaluator(backend, trials.metric, ctx.reference.data.x)
    result = control(evaluate, backend.candidates(), [o.id for o in backend.ops], budget, progress=ctx.progress)
    section = control_section(result, backend, trials.metric, artifact)
    section["evaluations"] += len(trials.order)
    section["int16_macs_share"] = 0.0
    section["total_macs"] = int(sum(o.macs for o in backend.ops))
    content = backend.build(result.chosen) if result.chosen else backend.plain
    section["latency_cost"] = float_latency_cost(backend, result.chosen)
    chosen_ops = [{"id": o["id"], "op": o["op"], "layer": o["layer"]} for o in section["float_ops"]]
    return content, section, {"float_ops_chosen": chosen_ops, "activations": "int8"}


def float_latency_cost(backend, chosen) -> list[dict[str, Any]]:
    """LiteRT latency on this host of each op kept in float: the model as chosen against the same
    model with that op back in int8; and all of them against the int8 model."""
    if not chosen:
        return []
    models = {"chosen": backend.build(chosen), "int8": backend.plain}
    for op_id in sorted(chosen):
        models[op_id] = backend.build(chosen - {op_id})
    lat = latency_ms(models)
    by_id = {o.id: o for o in backend.ops}
    rows = [{"what": f"#{by_id[i].index} {by_id[i].op} in float", "layers": by_id[i].layer, "ms": lat["chosen"],
             "int8_ms": lat[i], "cost_ms": round(lat["chosen"] - lat[i], 5)} for i in sorted(chosen)]
    rows.append({"what": "all kept in float", "layers": "", "ms": lat["chosen"], "int8_ms": lat["int8"],
                 "cost_ms": round(lat["chosen"] - lat["int8"], 5)})
    return rows


def each_alone(model, calib, metric, profile, output_names: list[str], seed: int = 0) -> dict[str, Any]:
    """Each remedy the profile's kind can carry, measured alone on the TFLite int8 model (what
    ``edgec analyze`` reports), in order of cost, after plain int8."""
    trials = Trials(model, calib, metric, io_dtype=profile.int8_io, output_names=output_names, seed=seed)
    offered = offered_for(profile.target, calib.x, model)
    combos = [Remedies()]
    for name in ORDER:
        if name not in offered:
            continue
        combos += [Remedies(range=m) for m in ("percentile", "mse")] if name == "range" else [Remedies(**{name: True})]
    for r in combos:
        trials(r)
    rows = trials.rows(set())
    for row in rows:
        row.pop("kept")
    reports: dict[str, Any] = {}
    for r in combos:
        reports.update(trials.cache[r][2])
    return {"offered": list(offered), "rows": rows, "reports": reports}
