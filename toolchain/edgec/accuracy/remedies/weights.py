"""Weight remedies from calibration data (no labels): empirical bias correction and learned
rounding (AdaRound).

Both change the float weights so that the converter's own int8 rounding lands where they want:

* **bias correction** (Nagel et al.; empirical): rounding a layer's kernel to its int8 grid shifts
  the mean of each output channel by ``E[x (W - Wq)]``. That mean, measured on the float model's
  input to the layer over the calibration data, is added to the layer's bias (or, without one, to
  the BatchNormalization beta after it, times its factor). The float model then computes a shifted
  function on purpose; its int8 model's mean output matches the float one.
* **AdaRound** (Nagel et al. 2020): per layer, a short optimization of the round-up/round-down
  choice of every int8 weight, minimizing the squared error of the layer's linear output on its
  calibration inputs (soft rounding with a rectified sigmoid and an annealed regularizer, then hard
  rounding). The chosen integers times the channel's step are written into the float kernel; the
  element with the channel's largest magnitude keeps it (+-127 steps), so the converter computes the
  same step and its round-to-nearest returns the chosen integers (checked: ``off_grid``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgec.accuracy.remedies import layers as L

log = logging.getLogger(__name__)

ADAROUND_STEPS = 300
ADAROUND_BATCH = 32
ADAROUND_LR = 1e-2
ADAROUND_REG = 0.01
ZETA, GAMMA = 1.1, -0.1


def _targets(model) -> list[str]:
    return [layer.name for layer in model.layers if L.supported(layer)]


def _bn_after(model, name: str):
    layer = model.get_layer(name)
    nodes = layer._outbound_nodes  # noqa: SLF001
    if len(nodes) == 1 and type(nodes[0].outbound_layer).__name__ == "BatchNormalization":
        return nodes[0].outbound_layer
    return None


def _copy(model, new: dict[str, list[np.ndarray]]):
    from edgec.optimize.graph import rebuild

    def replace(layer, args, kwargs):
        if layer.name not in new:
            return None
        clone = layer.__class__.from_config(layer.get_config())
        out = clone(*args, **kwargs)
        clone.set_weights(new[layer.name])
        return out

    return rebuild(model, replace)


def _probe_inputs(model, qnew: dict[str, list[np.ndarray]], name: str, x: np.ndarray) -> np.ndarray:
    """The input to layer ``name`` on ``x`` when the layers in ``qnew`` have those weights (the
    layers before it with their int8 kernels): what that layer sees in the int8 model, but for the
    activations' own rounding."""
    probe = _copy(model, qnew) if qnew else model
    return L.layer_inputs(probe, [name], x)[name]


def _on_grid(layer, w: dict[str, np.ndarray]) -> list[np.ndarray]:
    kn = L.kernel_names(layer)
    return [L.quantized(v, k).astype(np.float32) if k in kn else v for k, v in w.items()]


def bias_correct(model, x: np.ndarray, sequential: bool = False) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with each weighted layer's int8 weight error removed from its mean output.

    By default each layer's int8 output is computed on the float model's input to it (its own
    error only). Sequential: on its input in the model whose earlier layers already have their int8
    kernels and corrected biases, so the mean error they pass on is corrected too (on the bench's
    mini-Xception it lost more than it won: the activations' rounding, which it does not model,
    dominates there).

    Returns:
        ``(model, report)``: per layer the largest correction, and the layers left out (no bias and
        no BatchNormalization after them).
    """
    names = _targets(model)
    inputs = L.layer_inputs(model, names, x)
    new: dict[str, list[np.ndarray]] = {}
    qnew: dict[str, list[np.ndarray]] = {}  # the same with every corrected layer's kernels at int8
    done, skipped = [], []
    for name in names:
        layer = model.get_layer(name)
        w = L.weights(layer)
        kn = L.kernel_names(layer)
        seen = _probe_inputs(model, qnew, name, x) if sequential else inputs[name]
        exact = np.asarray(L.linear(layer, inputs[name], [w[k] for k in kn]))
        rounded = np.asarray(L.linear(layer, seen, [L.quantized(w[k], k).astype(np.float32) for k in kn]))
        delta = (exact - rounded).reshape(-1, exact.shape[-1]).mean(axis=0)
        if "bias" in w:
            w["bias"] = (w["bias"] + delta).astype(np.float32)
            new[name] = list(w.values())
        else:
            bn = _bn_after(model, name)
            if bn is None or not (bn.scale and bn.center):
                skipped.append(name)
                qnew[name] = _on_grid(layer, w)
                continue
            b = L.weights(bn)
            factor = b["gamma"] / np.sqrt(b["moving_variance"] + bn.epsilon)
            b["beta"] = (b["beta"] + factor * delta).astype(np.float32)
            new[bn.name] = qnew[bn.name] = list(b.values())
        qnew[name] = _on_grid(layer, w)
        done.append({"layer": name, "max_shift": round(float(np.abs(delta).max()), 6)})
    return _copy(model, new), {"layers": done, "skipped": skipped, "sequential": sequential}


def _adaround_layer(layer, x: np.ndarray, seed: int, x_ref: np.ndarray | None = None) -> tuple[list[np.ndarray],
                                                                                      dict[str, Any]]:
    """Learned rounding of one layer: its output on ``x`` (the int8 model's input to it) made close
    to the float output on ``x_ref`` (the float model's; default ``x``)."""
    import tensorflow as tf

    w = L.weights(layer)
    kn = L.kernel_names(layer)
    steps = [L.step(w[k], k).astype(np.float32) for k in kn]
    floors = [np.floor(w[k] / s).astype(np.float32) for k, s in zip(kn, steps, strict=True)]
    rests = [(w[k] / s - f) for k, s, f in zip(kn, steps, floors, strict=True)]
    # sigmoid(v) * (ZETA - GAMMA) + GAMMA == rest at the start: the soft rounding starts at the float weight
    vs = [tf.Variable(-np.log((ZETA - GAMMA) / (np.clip(r, 1e-4, 1 - 1e-4) - GAMMA) - 1).astype(np.float32))
          for r in rests]
    target_kernels = [tf.constant(w[k]) for k in kn]
    opt = tf.keras.optimizers.Adam(ADAROUND_LR)
    rng = np.random.default_rng(seed)

    def soft(v):
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def kernels(hs):
        return [tf.clip_by_value(f + h, -L.QMAX, L.QMAX) * s for f, h, s in zip(floors, hs, steps, strict=True)]

    @tf.function(reduce_retracing=True)
    def train_step(batch, ref, beta, reg_on):
        with tf.GradientTape() as tape:
            hs = [soft(v) for v in vs]
            err = L.linear(layer, batch, kernels(hs)) - L.linear(layer, ref, target_kernels)
            rec = tf.reduce_mean(tf.square(err))
            reg = tf.add_n([tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta)) for h in hs])
            loss = rec + ADAROUND_REG * reg * reg_on
        opt.apply_gradients(zip(tape.gradient(loss, vs), vs, strict=True))

    x = x.astype(np.float32)
    x_ref = x if x_ref is None else x_ref.astype(np.float32)
    size = min(ADAROUND_BATCH, len(x))
    for i in range(ADAROUND_STEPS):
        pick = rng.choice(len(x), size=size, replace=False)
        batch, ref = x[pick], x_ref[pick]
        beta = 20.0 + (2.0 - 20.0) * i / max(ADAROUND_STEPS - 1, 1)  # annealed: soft early, binary late
        # reconstruction alone for the first fifth, then pushed towards 0 or 1
        train_step(tf.constant(batch), tf.constant(ref), tf.constant(beta, tf.float32),
                   tf.constant(float(i >= ADAROUND_STEPS // 5), tf.float32))
    out, flipped, total = {}, 0, 0
    for k, s, f, v in zip(kn, steps, floors, vs, strict=True):
        q = np.clip(f + (soft(v).numpy() >= 0.5), -L.QMAX, L.QMAX)
        nearest = np.clip(np.round(w[k] / s), -L.QMAX, L.QMAX)
        # keep each channel's largest weight at +-127 steps: the converter's step stays s
        view_w, view_q = L.channel_view(w[k], k), L.channel_view(q, k)
        flat_w = view_w.reshape(-1, view_w.shape[-1])
        flat_q = view_q.reshape(-1, view_q.shape[-1]).copy()
        top = np.abs(flat_w).argmax(axis=0)
        cols = np.arange(flat_w.shape[1])
        flat_q[top, cols] = np.sign(flat_w[top, cols]) * L.QMAX
        q = flat_q.reshape(view_q.shape).reshape(w[k].shape)
        flipped += int((q != nearest).sum())
        total += q.size
        out[k] = (q * s).astype(np.float32)
    target = np.asarray(L.linear(layer, x_ref[:256], [w[k] for k in kn]))
    with_err = [float(np.mean(np.square(np.asarray(L.linear(layer, x[:256], [out[k] for k in kn])) - target)))]
    nearest_err = float(np.mean(np.square(
        np.asarray(L.linear(layer, x[:256], [L.quantized(w[k], k).astype(np.float32) for k in kn])) - target)))
    w.update(out)
    return list(w.values()), {"layer": layer.name, "weights": total, "flipped": flipped,
                              "mse_nearest": nearest_err, "mse_learned": with_err[0]}


def off_grid(kernel: np.ndarray, name: str) -> int:
    """Weights the converter's round-to-nearest would move off their value (0 when on the grid)."""
    s = L.step(kernel, name)
    return int((np.abs(kernel / s - np.round(kernel / s)) > 1e-3).sum())


def adaround(model, x: np.ndarray, seed: int = 0, sequential: bool = False) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with every weighted layer's kernel at its learned int8 rounding.

    By default each layer is optimized on the float model's input to it. Sequential: on its input
    in the model whose earlier layers already have their learned int8 kernels, towards the float
    model's output of the layer (so it also absorbs the error they pass on; measured worse on the
    bench's mini-Xception).

    Returns:
        ``(model, report)``: per layer the weights flipped against round-to-nearest and the output
        MSE of both roundings; ``off_grid``: weights not on their grid (must be 0).
    """
    names = _targets(model)
    inputs = L.layer_inputs(model, names, x)
    new, rows = {}, []
    for k, name in enumerate(names):
        seen = _probe_inputs(model, new, name, x) if sequential else inputs[name]
        new[name], row = _adaround_layer(model.get_layer(name), seen, seed + k, inputs[name])
        rows.append(row)
    out = _copy(model, new)
    bad = sum(off_grid(v, kn) for name in names for kn, v in L.weights(out.get_layer(name)).items()
              if kn in L.kernel_names(out.get_layer(name)))
    flipped = sum(r["flipped"] for r in rows)
    return out, {"layers": [{**r, "mse_nearest": round(r["mse_nearest"], 8), "mse_learned": round(r["mse_learned"], 8)}
                            for r in rows],
                 "flipped_share": round(flipped / max(sum(r["weights"] for r in rows), 1), 6), "off_grid": bad,
                 "sequential": sequential}
