"""LiteRT inference of a single-input, single-output .tflite, independent of edgec's own runners."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_single(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's one output on the batch ``x`` (the input resized to its shape)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])
