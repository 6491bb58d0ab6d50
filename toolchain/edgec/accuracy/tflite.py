"""The TFLite accuracy backend, re-exported from the TFLite target's package
(:mod:`edgec.targets.tflite.accuracy`), where it lives."""

from edgec.targets.tflite.accuracy import (
    TFLiteBackend,
    chosen_float_ops,
    deduplicate,
    op_macs,
    quiet,
)

__all__ = ["TFLiteBackend", "chosen_float_ops", "deduplicate", "op_macs", "quiet"]
