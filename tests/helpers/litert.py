"""LiteRT inference of single-input, single-output .tflite files, independent of edgec's own
runners."""

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


def litert_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """A bare LiteRT loop, one sample per invoke: accuracy and the float logits."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    if list(i["shape"][:1]) != [1]:
        it.resize_tensor_input(i["index"], [1, *i["shape"][1:]])
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = i["quantization"], o["quantization"]
    info = np.iinfo(i["dtype"])
    logits = []
    for sample in x:
        it.set_tensor(i["index"], np.clip(np.round(sample[None] / s_in + z_in), info.min, info.max).astype(i["dtype"]))
        it.invoke()
        logits.append((it.get_tensor(o["index"]).astype(np.float32) - z_out) * s_out)
    out = np.concatenate(logits)
    return float((out.argmax(1) == y).mean()), out
