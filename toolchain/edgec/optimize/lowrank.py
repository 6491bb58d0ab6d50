"""Low-rank factorization: split Dense and Conv kernels into two thinner layers by SVD.

A Dense kernel W (m x n) = U S V^T becomes Dense(r, no bias, linear) with kernel U_r S_r^(1/2)
followed by Dense(n) with kernel S_r^(1/2) V_r^T and the original bias and activation. A Conv2D
k_h x k_w kernel takes one of two forms, whichever needs fewer MACs at its rank:

* spatial (Jaderberg et al., 2014, scheme 2; Tai et al., 2016): a k_h x 1 convolution to r
  channels followed by a 1 x k_w convolution, from the SVD of the kernel laid out as a
  (k_h * C_in) x (k_w * C_out) matrix;
* bottleneck: a k_h x k_w convolution to r channels followed by a 1 x 1 convolution, from the
  SVD of the (k_h * k_w * C_in) x C_out matrix (the only form for 1 x 1 and Conv1D kernels).

Strides, padding and dilation are split between the two layers so the pair computes exactly
the rank-r approximation of the original layer. The rank per layer is ``ceil(RANK_FRACTION x full
rank)`` or the smallest rank keeping the share ``E`` of the kernel's spectral energy (sum of the
squared singular values). A layer is factorized only when that saves MACs; the layer producing a
model output keeps its full rank (a low-rank classifier head costs accuracy for few MACs).
The second layer keeps the original layer's name, so outputs are matched by the same names.
BatchNorm statistics are re-estimated on the fine-tune inputs before and after fine-tuning.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.optimize import graph
from edgec.optimize.spec import OptimizeSpec
from edgec.optimize.train import FineTuneData, fine_tune
from edgec.progress import Progress

SUFFIX = "_lowrank"  # name of the first (thin) layer of a factorized pair: '<layer>_lowrank'


def choose_rank(singular: np.ndarray, *, fraction: float | None, energy: float | None) -> int:
    """The rank kept of a kernel with these singular values (descending)."""
    full = len(singular)
    if fraction is not None:
        return max(1, min(full, math.ceil(fraction * full - 1e-9)))
    power = np.cumsum(np.asarray(singular, dtype=np.float64) ** 2)
    if power[-1] <= 0:
        return 1
    return int(min(full, np.searchsorted(power / power[-1], energy - 1e-12) + 1))


def _energy(singular: np.ndarray, rank: int) -> float:
    power = np.asarray(singular, dtype=np.float64) ** 2
    return round(float(power[:rank].sum() / power.sum()), 6) if power.sum() > 0 else 1.0


def _factors(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def _candidates(layer, in_shape: tuple, out_shape: tuple, spec: OptimizeSpec) -> list[dict[str, Any]]:
    """Each way ``layer`` can be factorized: form, rank, full rank, energy kept, MACs and params."""
    kind = type(layer).__name__
    w = {v.name.split("/")[-1].split(":")[0]: np.asarray(v.numpy()) for v in layer.weights}
    kernel = w["kernel"]
    bias = int(w["bias"].size) if "bias" in w else 0
    cin, cout = int(kernel.shape[-2]), int(kernel.shape[-1])
    positions = graph.prod(out_shape[1:-1])
    out = []

    def add(form: str, matrix: np.ndarray, macs_of_rank, params_of_rank) -> None:
        singular = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
        rank = choose_rank(singular, fraction=spec.low_rank, energy=spec.low_rank_energy)
        out.append({"form": form, "rank": rank, "full_rank": len(singular), "energy_kept": _energy(singular, rank),
                    "macs_after": macs_of_rank(rank), "params_after": params_of_rank(rank) + bias,
                    "matrix": matrix})

    if kind == "Dense":
        add("dense", kernel, lambda r: positions * r * (cin + cout), lambda r: r * (cin + cout))
        return out
    taps = graph.prod(kernel.shape[:-2])
    add("bottleneck", kernel.reshape(taps * cin, cout), lambda r: positions * r * (taps * cin + cout),
        lambda r: r * (taps * cin + cout))
    if kind == "Conv2D" and kernel.shape[0] > 1 and kernel.shape[1] > 1:
        kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
        mid_positions = int(out_shape[1]) * int(in_shape[2])  # k_h x 1 output: output rows, input columns
        matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
        add("spatial", matrix, lambda r: mid_positions * kh * cin * r + positions * kw * r * cout,
            lambda r: r * (kh * cin + kw * cout))
    return out


def _why_not(layer, is_output: bool) -> str | None:
    kind = type(layer).__name__
    cfg = layer.get_config()
    if kind not in ("Dense", "Conv1D", "Conv2D"):
        if kind.startswith("Depthwise"):
            return "a depthwise kernel has one filter per channel: nothing to factorize"
        return None
    if is_output:
        return "produces a model output (kept at full rank)"
    if int(cfg.get("groups", 1) or 1) != 1:
        return "grouped convolution"
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        return "channels_first"
    if len(layer._inbound_nodes) != 1:  # noqa: SLF001
        return "shared layer"
    return None


def plan(model, spec: OptimizeSpec) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per layer: the chosen factorization (or why not). Returns (chosen by layer name, rows)."""
    outputs = {t._keras_history.layer.name for t in model.outputs}  # noqa: SLF001
    chosen: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for node in graph.nodes_in_order(model):
        layer = node.layer
        if node.is_input or not layer.weights:
            continue
        reason = _why_not(layer, layer.name in outputs)
        kind = type(layer).__name__
        if reason is None and kind not in ("Dense", "Conv1D", "Conv2D"):
            continue
        in_shape, out_shape = graph.shape_of(node.keras_inputs[0]), graph.shape_of(graph.flat(node.outputs)[0])
        macs = graph.node_macs(layer, in_shape, out_shape)
        row: dict[str, Any] = {"layer": layer.name, "type": kind, "params_before": int(layer.count_params()),
                               "macs_before": macs}
        if reason is not None:
            rows.append({**row, "factorized": False, "reason": reason})
            continue
        best = min(_candidates(layer, in_shape, out_shape, spec), key=lambda c: (c["macs_after"], c["form"] != "spatial"))
        row.update({k: best[k] for k in ("form", "rank", "full_rank", "energy_kept")})
        if best["macs_after"] >= macs:
            rows.append({**row, "factorized": False,
                         "reason": f"rank {best['rank']} of {best['full_rank']} saves no MACs"})
            continue
        chosen[layer.name] = {**best, "in_shape": in_shape}
        rows.append({**row, "factorized": True, "params_after": best["params_after"], "macs_after": best["macs_after"]})
    return chosen, rows


def _pair(layer, choice: dict[str, Any]):
    """The two layers replacing ``layer`` and their weights."""
    cfg = layer.get_config()
    kind = type(layer).__name__
    w = {v.name.split("/")[-1].split(":")[0]: np.asarray(v.numpy()) for v in layer.weights}
    kernel = w["kernel"]
    dtype = kernel.dtype
    rank = choice["rank"]
    a, b = _factors(choice["matrix"], rank)
    first = {**cfg, "name": f"{layer.name}{SUFFIX}", "use_bias": False, "activation": "linear",
             "activity_regularizer": None, "bias_regularizer": None}
    second = dict(cfg)
    if kind == "Dense":
        first["units"] = rank
        k1, k2 = a, b
    elif choice["form"] == "bottleneck":
        first["filters"] = rank
        k1 = a.reshape(*kernel.shape[:-1], rank)
        ones = (1,) * (kernel.ndim - 2)
        second.update(kernel_size=ones, strides=ones, padding="valid", dilation_rate=ones)
        k2 = b.reshape(*ones, rank, kernel.shape[-1])
    else:  # spatial: k_h x 1 then 1 x k_w
        kh, kw, cin, cout = kernel.shape
        sh, sw = cfg["strides"]
        dh, dw = cfg["dilation_rate"]
        first.update(filters=rank, kernel_size=(kh, 1), strides=(sh, 1), dilation_rate=(dh, 1))
        second.update(kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw))
        k1 = a.reshape(kh, cin, rank)[:, None, :, :]
        k2 = b.reshape(rank, kw, cout).transpose(1, 0, 2)[None]
    second_weights = [k2.astype(dtype)] + ([w["bias"]] if "bias" in w else [])
    return first, [k1.astype(dtype)], second, second_weights


def factorize(model, chosen: dict[str, dict[str, Any]]):
    """A new model with each layer in ``chosen`` replaced by its factorized pair."""
    def factorized(layer, args, kwargs):
        if layer.name not in chosen:
            return None
        first_cfg, first_w, second_cfg, second_w = _pair(layer, chosen[layer.name])
        first = layer.__class__.from_config(first_cfg)
        mid = first(*args, **kwargs)
        first.set_weights(first_w)
        second = layer.__class__.from_config(second_cfg)
        outputs = second(mid)
        second.set_weights(second_w)
        return outputs

    return graph.rebuild(model, factorized)


def low_rank(model, data: FineTuneData, spec: OptimizeSpec, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """Factorize, fine-tune; return the model and the per-layer record.

    Raises:
        EdgecError: no layer saves MACs at the requested rank.
    """
    chosen, rows = plan(model, spec)
    if not chosen:
        reasons = "; ".join(f"{r['layer']}: {r['reason']}" for r in rows) or "no Dense or Conv layer"
        flag = f"--low-rank {spec.low_rank:g}" if spec.low_rank is not None else f"--low-rank-energy {spec.low_rank_energy:g}"
        raise EdgecError(f"{flag} factorizes no layer of model '{model.name}' ({reasons}); lower the rank or drop it")
    smaller = factorize(model, chosen)
    recalibrated = graph.recalibrate_batchnorm(smaller, data.x_train)
    fit = fine_tune(smaller, data, spec, step="low_rank", progress=progress)
    graph.recalibrate_batchnorm(smaller, data.x_train)
    return smaller, {"rank_fraction": spec.low_rank, "energy": spec.low_rank_energy, "layers": rows,
                     "batchnorm_recalibrated": recalibrated, "fine_tune": fit}
