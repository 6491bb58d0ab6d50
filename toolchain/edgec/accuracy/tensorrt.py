"""The TensorRT accuracy backend, re-exported from the TensorRT target's package
(:mod:`edgec.targets.tensorrt.accuracy`), where it lives."""

from edgec.targets.tensorrt.accuracy import TensorRTBackend, chosen_float_ops

__all__ = ["TensorRTBackend", "chosen_float_ops"]
