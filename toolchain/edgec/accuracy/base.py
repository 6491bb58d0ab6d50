"""The quantization backend interface accuracy control works with, re-exported from where the
target kinds implement it (:mod:`edgec.targets.quant`)."""

from edgec.targets.quant import Backend, Candidate, QuantOp, layers_named, sqnr_db

__all__ = ["Backend", "Candidate", "QuantOp", "layers_named", "sqnr_db"]
