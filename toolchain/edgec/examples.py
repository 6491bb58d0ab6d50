"""Bundled example data and reference models: scikit-learn's digits, three small CNNs and three
larger nets for the speed work.

Used by ``make demo``, the tests and the benchmarks; nothing is downloaded. Run
``python -m edgec.examples --out DIR`` to train a model and write ``DIR/digits_cnn.keras``,
``DIR/calib.npz`` (training inputs) and ``DIR/eval.npz`` (held-out inputs and labels).

The larger nets read the digits upscaled (nearest neighbour): ``resnet`` (ResNet-style, 40x40,
over 2 ms in fp32 LiteRT on an x86 core), ``mobilenet`` (MobileNetV2-style inverted residuals on
32x32 RGB, the structure XNNPACK's sparse inference needs) and ``mlp`` (Dense-heavy).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

ARCHITECTURES = ("cnn", "residual", "separable", "resnet", "mobilenet", "mlp")
INPUT_SHAPES = {"resnet": (40, 40, 1), "mobilenet": (32, 32, 3)}  # the rest read the 8x8 digits


@dataclasses.dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits(seed: int = 0, test_size: float = 0.3, shape: tuple[int, int, int] = (8, 8, 1)) -> Split:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], stratified split.

    Args:
        shape: (height, width, channels) of the images: a multiple of 8 upscales by repeating
            pixels, more than one channel repeats the grey image (RGB input).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    height, width, channels = shape
    if height % 8 or width % 8:
        raise ValueError(f"digits upscale by whole factors of 8x8: got {height}x{width}")
    x = np.repeat(np.repeat(x, height // 8, axis=1), width // 8, axis=2)
    x = np.ascontiguousarray(np.repeat(x, channels, axis=3))
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return Split(x_tr, y_tr, x_te, y_te)


def arch_shape(arch: str) -> tuple[int, int, int]:
    """The digits shape an architecture reads."""
    return INPUT_SHAPES.get(arch, (8, 8, 1))


def make_model(arch: str = "cnn", input_shape=None, classes: int = 10, seed: int = 0):
    """A tf-keras classifier (logits out), its initial weights drawn from ``seed`` and its layers
    named as in a fresh Keras session (``conv2d``, ``conv2d_1``, ...), whatever was built before
    in this process.

    Args:
        arch: "cnn" (plain convs), "residual" (skip connections with Add), "separable"
            (depthwise-separable convolutions, MobileNet style), "resnet" (ResNet-style, three
            stages of two residual blocks, 32-64-128 channels), "mobilenet" (MobileNetV2-style
            inverted residuals, laid out as XNNPACK's sparse inference needs) or "mlp" (three
            Dense layers of 512 units).
        input_shape: ``None`` for the architecture's own (:func:`arch_shape`).
    """
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(seed)
    keras.backend.reset_uids()
    layers = keras.layers
    shape = tuple(input_shape or arch_shape(arch))
    if arch in ("resnet", "mobilenet", "mlp"):
        return _larger(arch, shape, classes, keras)
    inp = keras.Input(shape, name="image")
    if arch == "cnn":
        x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
        x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(64, activation="relu")(x)
    elif arch == "residual":
        x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inp)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        for _ in range(2):
            y = layers.Conv2D(32, 3, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization()(y)
            y = layers.ReLU()(y)
            y = layers.Conv2D(32, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            x = layers.ReLU()(layers.Add()([x, y]))
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
    elif arch == "separable":
        x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        for filters, stride in ((64, 1), (128, 2), (256, 1), (256, 1)):
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU(6.0)(x)
            x = layers.Conv2D(filters, 1, use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU(6.0)(x)
        x = layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHITECTURES)}")
    out = layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name=f"digits_{arch}")


def _larger(arch: str, shape: tuple, classes: int, keras):
    layers = keras.layers

    def norm():
        # a shorter memory than the default 0.99: the activations of these nets on the digits have
        # tiny variances, which the moving variance takes thousands of steps to reach from 1
        return layers.BatchNormalization(momentum=0.9)

    inp = keras.Input(shape, name="image")
    if arch == "mlp":
        x = layers.Flatten()(inp)
        for _ in range(3):
            x = layers.Dense(512, activation="relu")(x)
    elif arch == "resnet":
        x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inp)
        x = layers.ReLU()(norm()(x))
        for stage, filters in enumerate((32, 64, 128)):
            for block in range(2):
                stride = 2 if stage and not block else 1
                y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
                y = layers.ReLU()(norm()(y))
                y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
                y = norm()(y)
                if stride != 1 or x.shape[-1] != filters:  # projection shortcut
                    x = norm()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
                x = layers.ReLU()(layers.Add()([x, y]))
        x = layers.GlobalAveragePooling2D()(x)
    elif arch == "mobilenet":
        # XNNPACK's sparse subgraph: 3x3 stride-2 convolution on 3 channels after 1-pixel padding,
        # then 1x1 convolutions and 3x3 depthwise ones (stride 2 after 1-pixel padding), up to a
        # spatial mean
        x = layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False)(layers.ZeroPadding2D(1)(inp))
        x = layers.ReLU(6.0)(norm()(x))
        channels = 32
        for expansion, filters, repeats, first_stride in ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2),
                                                          (6, 96, 1, 1)):
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                y = x
                if expansion != 1:
                    y = layers.Conv2D(channels * expansion, 1, use_bias=False)(y)
                    y = layers.ReLU(6.0)(norm()(y))
                if stride == 2:
                    y = layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False)(layers.ZeroPadding2D(1)(y))
                else:
                    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
                y = layers.ReLU(6.0)(norm()(y))
                y = norm()(layers.Conv2D(filters, 1, use_bias=False)(y))
                x = layers.Add()([x, y]) if stride == 1 and channels == filters else y
                channels = filters
        x = layers.Conv2D(256, 1, use_bias=False)(x)
        x = layers.ReLU(6.0)(norm()(x))
        x = layers.Flatten()(layers.GlobalAveragePooling2D(keepdims=True)(x))
    else:
        raise ValueError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHITECTURES)}")
    out = layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name=f"digits_{arch}")


def train(model, split: Split, epochs: int = 30, seed: int = 0, batch_size: int = 32, verbose: int = 0,
          log_epochs: bool = False):
    """Train in place with Adam + sparse cross-entropy on logits; returns held-out accuracy.

    ``log_epochs`` prints one line per epoch (loss, training accuracy) on stderr, so a training
    run from the command line shows it is moving.
    """
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    callbacks = [_epoch_lines(keras, model.name, epochs)] if log_epochs else []
    model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=batch_size, verbose=verbose, shuffle=True,
              callbacks=callbacks)
    return float(model.evaluate(split.x_test, split.y_test, verbose=0)[1])


def _epoch_lines(keras, name: str, epochs: int):
    """A Keras callback printing ``training NAME: epoch 3/30 loss 0.41 accuracy 88.2 %`` to stderr."""
    import sys

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            print(f"training {name}: epoch {epoch + 1}/{epochs} loss {logs.get('loss', float('nan')):.4f} "
                  f"accuracy {logs.get('accuracy', float('nan')) * 100:.1f} %", file=sys.stderr, flush=True)

    return EpochLines()


def with_outlier_unit(model, x: np.ndarray, ratio: float = 200.0):
    """The same classifier in float with one outlier unit: a copy of ``model`` whose last hidden
    Dense+ReLU layer has one unit (its most active on ``x``) scaled so its range is ``ratio`` times
    the other units' largest, and the next Dense layer's weights from that unit divided by as much.

    ReLU is positively homogeneous, so the float outputs do not change (up to rounding); the int8
    model, which quantizes that layer's output per tensor, keeps the other units on a grid
    ``ratio`` times coarser (at 200 they span about one int8 step), as activation outliers do in
    large models. A model to show what accuracy-aware int8 recovers.

    Raises:
        ValueError: the model has no Dense+ReLU layer feeding a Dense layer.
    """
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    pairs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "relu":
            users = [n.outbound_layer for n in layer._outbound_nodes]  # noqa: SLF001 - Keras graph
            if len(users) == 1 and isinstance(users[0], keras.layers.Dense):
                pairs.append((layer.name, users[0].name))
    if not pairs:
        raise ValueError(f"model '{model.name}' has no Dense+ReLU layer feeding a Dense layer")
    hidden_name, next_name = pairs[-1]
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    hidden, following = clone.get_layer(hidden_name), clone.get_layer(next_name)
    peak = np.asarray(keras.Model(clone.inputs, hidden.output)(x, training=False)).max(axis=0)
    unit = int(np.argmax(peak))
    factor = ratio * float(np.delete(peak, unit).max()) / float(peak[unit])
    kernel, bias = hidden.get_weights()
    kernel[:, unit] *= factor
    bias[unit] *= factor
    hidden.set_weights([kernel, bias])
    k_next, *rest = following.get_weights()
    k_next[unit, :] /= factor
    following.set_weights([k_next, *rest])
    clone._name = f"{model.name}_outlier"  # noqa: SLF001 - Keras keeps the name here
    return clone


def write_example(out: Path, arch: str = "cnn", epochs: int = 30, seed: int = 0,
                  log_epochs: bool = False) -> dict:
    """Train a digits model and write it with calibration and eval data into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = digits(seed, shape=arch_shape(arch))
    model = make_model(arch, seed=seed)
    acc = train(model, split, epochs=epochs, seed=seed, log_epochs=log_epochs)
    model_path = out / f"digits_{arch}.keras"
    model.save(model_path)
    np.savez(out / "calib.npz", x=split.x_train)
    np.savez(out / "eval.npz", x=split.x_test, y=split.y_test)
    np.savez(out / "train.npz", x=split.x_train, y=split.y_train)
    return {"model": str(model_path), "accuracy": acc, "train": len(split.x_train), "eval": len(split.x_test)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--arch", choices=ARCHITECTURES, default="cnn")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outlier", type=float, metavar="RATIO",
                        help="also write DIR/digits_ARCH_outlier.keras: the same model with one hidden unit whose "
                             "range is RATIO times the others' (cnn; e.g. 200)")
    args = parser.parse_args(argv)
    info = write_example(args.out, args.arch, args.epochs, args.seed, log_epochs=True)
    print(f"trained {info['model']}: float accuracy {info['accuracy'] * 100:.2f} % on {info['eval']} held-out digits "
          f"({info['train']} training samples); data in {args.out}/calib.npz, eval.npz, train.npz")
    if args.outlier:
        from edgec.tfcompat import tf_and_keras

        _, keras = tf_and_keras()
        model = keras.models.load_model(info["model"], compile=False)
        path = Path(args.out) / f"digits_{args.arch}_outlier.keras"
        with_outlier_unit(model, digits(args.seed).x_train, args.outlier).save(path)
        print(f"wrote {path}: one hidden unit {args.outlier:g}x the others' range (same float outputs)")


if __name__ == "__main__":
    main()
