"""The integer remedies for TensorRT's Q/DQ ONNX model: each combination of the weight remedies
(equalization, bias correction, AdaRound) re-exported and re-calibrated as the target does, and
measured with ONNX Runtime's exact int8 (as TensorRT computes), before the float fallback."""

from __future__ import annotations

import os
from typing import Any

from edgec.accuracy.remedies import Remedies
from edgec.accuracy.remedies.apply import KerasVariants


class QDQTrials:
    """:class:`edgec.accuracy.remedies.control.Trials` for TensorRT: ``content`` is the Q/DQ ONNX proto."""

    def __init__(self, ctx, metric, forced: Remedies, forced_qdq):
        self.ctx, self.metric = ctx, metric
        self.variants = KerasVariants(ctx.model, ctx.calib.x, ctx.options.seed)
        self.layer_names = [layer.name for layer in getattr(ctx.model, "layers", [])]
        self.cache: dict[Remedies, tuple[Any, Any, dict]] = {}
        self.order: list[Remedies] = []
        self.kept: set[Remedies] = set()
        self._given = {forced: forced_qdq}  # what the target already quantized with the forced flags

    def _qdq(self, r: Remedies):
        if r in self._given:
            return self._given[r], self.variants.get(r)[1] if any(r.keras) else {}
        from edgec.targets.tensorrt.export import export_onnx
        from edgec.targets.tensorrt.quantize import quantize_model

        model, reports = self.variants.get(r)
        proto = export_onnx(model, int(self.ctx.profile.tensorrt["onnx_opset"]), self.ctx.output_names)
        qdq, _ = quantize_model(model, proto, {}, self.ctx.calib, self.ctx.progress)
        return qdq, reports

    def __call__(self, r: Remedies):
        if r not in self.cache:
            from edgec.accuracy.tensorrt import TensorRTBackend

            qdq, reports = self._qdq(r)
            backend = TensorRTBackend(qdq, layer_names=self.layer_names, threads=os.cpu_count())
            artifact = backend.build(())
            outs, names = backend.run(artifact, self.metric.ref.data.x)
            self.cache[r] = (self.metric.score(outs, names), qdq, reports, backend.size(artifact))
            self.order.append(r)
        return self.cache[r][:3]

    def rows(self, kept: set[Remedies]) -> list[dict[str, Any]]:
        return [{"remedies": r.names(), "label": r.label(), "drop_points": self.cache[r][0].drop_points,
                 "value": round(self.cache[r][0].value, 6), "bytes": self.cache[r][3], "kept": r in kept}
                for r in self.order]


def choose(ctx, qdq) -> tuple[Any, dict[str, Any] | None]:
    """The Q/DQ model with the cheapest weight remedies that meet the budget (or the best found),
    and what to add to the manifest's ``accuracy_control``; ``(qdq, None)`` with --no-remedies."""
    from edgec.accuracy.metric import Metric
    from edgec.accuracy.remedies import describe, offered
    from edgec.accuracy.remedies.control import search

    if not ctx.options.remedies:
        return qdq, None
    forced = Remedies.from_options(ctx.options)
    trials = QDQTrials(ctx, Metric(ctx.reference), forced, qdq)
    chosen, trials, _ = search(ctx, forced, float(ctx.options.max_accuracy_drop), trials)
    score, proto, reports = trials(chosen)
    plain = trials(trials.order[0])[0]
    if any(chosen.keras):
        ctx.extra["remedies"] = describe(chosen, reports)
    return proto, {"chosen": chosen.names(), "tried": trials.rows(trials.kept), "reports": reports,
                   "offered": list(offered("tensorrt", ctx.calib.x, ctx.model)), "plain": plain, "bytes": trials.cache[trials.order[0]][3]}
