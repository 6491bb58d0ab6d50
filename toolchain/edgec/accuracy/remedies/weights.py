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


def bias_correct(model, x: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with each weighted layer's int8 weight error removed from its mean output.

    Returns:
        ``(model, report)``: per layer the largest correction, and the layers left out (no bias and
        no BatchNormalization after them).
    """
    names = _targets(model)
    inputs = L.layer_inputs(model, names, x)
    new: dict[str, list[np.ndarray]] = {}
    done, skipped = [], []
    for name in names:
        layer = model.get_layer(name)
        w = L.weights(layer)
        kn = L.kernel_names(layer)
        exact = np.asarray(L.linear(layer, inputs[name], [w[k] for k in kn]))
        rounded = np.asarray(L.linear(layer, inputs[name], [L.quantized(w[k], k).astype(np.float32) for k in kn]))
        delta = (exact - rounded).reshape(-1, exact.shape[-1]).mean(axis=0)
        if "bias" in w:
            w["bias"] = (w["bias"] + delta).astype(np.float32)
            new[name] = list(w.values())
        else:
            bn = _bn_after(model, name)
            if bn is None or not (bn.scale and bn.center):
                skipped.append(name)
                continue
            b = L.weights(bn)
            factor = b["gamma"] / np.sqrt(b["moving_variance"] + bn.epsilon)
            b["beta"] = (b["beta"] + factor * delta).astype(np.float32)
            new[bn.name] = list(b.values())
        done.append({"layer": name, "max_shift": round(float(np.abs(delta).max()), 6)})
    return _copy(model, new), {"layers": done, "skipped": skipped}


def _adaround_layer(layer, x: np.ndarray, seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
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
    def train_step(batch, beta, reg_on):
        with tf.GradientTape() as tape:
            hs = [soft(v) for v in vs]
            err = L.linear(layer, batch, kernels(hs)) - L.linear(layer, batch, target_kernels)
            rec = tf.reduce_mean(tf.square(err))
            reg = tf.add_n([tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta)) for h in hs])
            loss = rec + ADAROUND_REG * reg * reg_on
        opt.apply_gradients(zip(tape.gradient(loss, vs), vs, strict=True))

    x = x.astype(np.float32)
    size = min(ADAROUND_BATCH, len(x))
    for i in range(ADAROUND_STEPS):
        batch = x[rng.choice(len(x), size=size, replace=False)]
        beta = 20.0 + (2.0 - 20.0) * i / max(ADAROUND_STEPS - 1, 1)  # annealed: soft early, binary late
        # reconstruction alone for the first fifth, then pushed towards 0 or 1
        train_step(tf.constant(batch), tf.constant(beta, tf.float32),
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
    with_err = [float(np.mean(np.square(np.asarray(L.linear(layer, x[:256], [out[k] for k in kn]))
                                        - np.asarray(L.linear(layer, x[:256], [w[k] for k in kn])))))]
    nearest_err = float(np.mean(np.square(
        np.asarray(L.linear(layer, x[:256], [L.quantized(w[k], k).astype(np.float32) for k in kn]))
        - np.asarray(L.linear(layer, x[:256], [w[k] for k in kn])))))
    w.update(out)
    return list(w.values()), {"layer": layer.name, "weights": total, "flipped": flipped,
                              "mse_nearest": nearest_err, "mse_learned": with_err[0]}


def off_grid(kernel: np.ndarray, name: str) -> int:
    """Weights the converter's round-to-nearest would move off their value (0 when on the grid)."""
    s = L.step(kernel, name)
    return int((np.abs(kernel / s - np.round(kernel / s)) > 1e-3).sum())


def adaround(model, x: np.ndarray, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with every weighted layer's kernel at its learned int8 rounding.

    Each layer is optimized on the float model's input to it (layer by layer, not sequentially).

    Returns:
        ``(model, report)``: per layer the weights flipped against round-to-nearest and the output
        MSE of both roundings; ``off_grid``: weights not on their grid (must be 0).
    """
    names = _targets(model)
    inputs = L.layer_inputs(model, names, x)
    new, rows = {}, []
    for k, name in enumerate(names):
        new[name], row = _adaround_layer(model.get_layer(name), inputs[name], seed + k)
        rows.append(row)
    out = _copy(model, new)
    bad = sum(off_grid(v, kn) for name in names for kn, v in L.weights(out.get_layer(name)).items()
              if kn in L.kernel_names(out.get_layer(name)))
    flipped = sum(r["flipped"] for r in rows)
    return out, {"layers": [{**r, "mse_nearest": round(r["mse_nearest"], 8), "mse_learned": round(r["mse_learned"], 8)}
                            for r in rows],
                 "flipped_share": round(flipped / max(sum(r["weights"] for r in rows), 1), 6), "off_grid": bad}
