"""Representative, fine-tune and evaluation data for builds.

One entry point, :func:`load`, takes what a user passes on the command line:

* ``data.npz``: array ``x`` (inputs) and optionally ``y`` (integer labels or one-hot);
* ``data.npy``: inputs only;
* a folder of images: resized to the model input; when every image sits in a sub-folder, the
  sorted sub-folder names are the class labels (as Keras' ``image_dataset_from_directory`` does);
* ``module:function`` or ``path/to/file.py:function``: a callable returning an iterable of input
  batches, or of ``(x, y)`` batch pairs.

Pixels (image folders, and uint8 arrays from any source) are turned into model input by the
build's :class:`~edgec.calibration.inputs.InputPreprocessing` (``--input-range``, ``--normalize``,
``--mean``/``--std``, or what the model's first layer implies); float arrays are taken as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgec.calibration.inputs import InputPreprocessing
from edgec.errors import EdgecError
from edgec.util import load_function

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclasses.dataclass
class Dataset:
    """Inputs (float32, batch first) and optional integer labels."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    total: int  # samples available before sub-sampling
    pixels: bool = False  # loaded as 8-bit pixels and preprocessed into model input

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict:
        out = {"source": self.source, "samples": len(self), "available": self.total,
               "labelled": self.y is not None, "preprocessed_pixels": self.pixels}
        if self.x.size:
            out["range"] = [round(float(self.x.min()), 6), round(float(self.x.max()), 6)]
        return out


def load(
    spec: str | Path,
    input_shape: Sequence[int | None],
    *,
    purpose: str = "calibration",
    limit: int | None = None,
    seed: int = 0,
    need_labels: bool = False,
    preprocess: InputPreprocessing | None = None,
) -> Dataset:
    """Load data and check it against the model input.

    Args:
        spec: path or ``module:function`` (see the module docstring).
        input_shape: model input shape without the batch dimension (``None`` = any size).
        purpose: used in error messages ("calibration", "eval", "fine-tune").
        limit: keep at most this many samples, drawn without replacement with ``seed``.
        seed: makes the sub-sample deterministic.
        need_labels: the data must carry labels.
        preprocess: turns pixels (image folders, uint8 arrays) into model input; ``None``
            scales them to [0, 1].

    Raises:
        EdgecError: unreadable data, a shape that does not match the model input, missing labels.
    """
    spec_str = str(spec)
    path = Path(spec_str)
    is_callable = ":" in spec_str and not path.exists() and path.suffix.lower() not in (".npz", ".npy")
    if not is_callable and not path.exists():
        raise EdgecError(f"{purpose} data '{spec_str}' does not exist")
    if path.is_dir():
        x, y = _load_image_folder(path, input_shape, purpose)
    elif path.suffix.lower() == ".npz":
        x, y = _load_npz(path, purpose)
    elif path.suffix.lower() == ".npy":
        x, y = _load_npy(path, purpose), None
    elif is_callable:
        x, y = _load_callable(spec_str, purpose, limit)
    else:
        raise EdgecError(
            f"{purpose} data '{spec_str}' has an unknown format; expected .npz (x, y), .npy, "
            "a folder of images, or module:function"
        )
    x = _check_shape(np.asarray(x), input_shape, spec_str, purpose)
    if y is not None:
        y = _labels(np.asarray(y), len(x), spec_str, purpose)
    pixels = path.is_dir() or np.asarray(x).dtype == np.uint8
    if pixels:
        x = (preprocess or InputPreprocessing((0.0, 1.0))).apply(x)
    if need_labels and y is None:
        raise EdgecError(f"{purpose} data '{spec_str}' has no labels; give an .npz with arrays 'x' and 'y', "
                         "or an image folder with one sub-folder per class")
    total = len(x)
    if total == 0:
        raise EdgecError(f"{purpose} data '{spec_str}' is empty")
    if limit is not None and total > limit:
        idx = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        x = x[idx]
        y = y[idx] if y is not None else None
    return Dataset(x=np.ascontiguousarray(x, dtype=np.float32), y=y, source=spec_str, total=total, pixels=pixels)


def _load_npz(path: Path, purpose: str):
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise EdgecError(f"{purpose} data '{path}' has no array 'x'; found {sorted(data.files)}")
            return data["x"], (data["y"] if "y" in data.files else None)
    except EdgecError:
        raise
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read {purpose} data '{path}': {exc}") from exc


def _load_npy(path: Path, purpose: str):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read {purpose} data '{path}': {exc}") from exc


def _load_image_folder(root: Path, input_shape, purpose: str):
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3 or input_shape[0] is None or input_shape[1] is None:
        raise EdgecError(
            f"{purpose} data '{root}' is an image folder, but the model input has shape "
            f"{tuple(input_shape)}; images need an (height, width, channels) input with fixed size"
        )
    height, width, channels = input_shape
    if channels not in (1, 3, 4):
        raise EdgecError(f"image folders need a model input with 1, 3 or 4 channels, got {channels}")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgecError(f"{purpose} data folder '{root}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labelled = classes and all(len(p.relative_to(root).parts) > 1 for p in files)
    images, labels = [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert(mode).resize((width, height), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32)  # pixels 0..255; the build's preprocessing scales them
        except (UnidentifiedImageError, OSError) as exc:
            raise EdgecError(f"cannot read image '{p}': {exc}") from exc
        images.append(arr.reshape(height, width, channels))
        if labelled:
            labels.append(classes.index(p.relative_to(root).parts[0]))
    return np.stack(images), (np.asarray(labels) if labelled else None)


def _load_callable(spec: str, purpose: str, limit: int | None):
    func = load_function(spec, f"{purpose} data '{spec}'", "_edgec_data_")
    try:
        batches: Iterable = func()
        xs, ys, count = [], [], 0
        for batch in batches:
            if isinstance(batch, (tuple, list)) and len(batch) == 2:
                bx, by = np.asarray(batch[0]), np.asarray(batch[1])
                ys.append(by.reshape(len(bx), *by.shape[1:]) if by.ndim else by.reshape(1))
            else:
                bx = np.asarray(batch)
            xs.append(bx)
            count += len(bx)
            if limit is not None and count >= 4 * limit:  # enough to draw a sample from
                break
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(f"{purpose} data '{spec}' raised {type(exc).__name__}: {exc}") from exc
    if not xs:
        raise EdgecError(f"{purpose} data '{spec}' yielded no batches")
    if ys and len(ys) != len(xs):
        raise EdgecError(f"{purpose} data '{spec}' mixes (x, y) pairs and bare batches")
    try:
        x = np.concatenate(xs)
    except ValueError as exc:
        raise EdgecError(f"{purpose} data '{spec}' yielded batches of different shapes: {exc}") from exc
    return x, (np.concatenate(ys) if ys else None)


def _check_shape(x: np.ndarray, input_shape, spec: str, purpose: str) -> np.ndarray:
    expected = tuple(input_shape)
    if x.dtype.kind not in "fiub":
        raise EdgecError(f"{purpose} data '{spec}' has dtype {x.dtype}; expected numbers")
    got = tuple(x.shape[1:])
    ok = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not ok:
        exp = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise EdgecError(
            f"{purpose} data '{spec}' has samples of shape {got}, but the model input expects {exp} "
            f"(batch dimension excluded; data array shape {tuple(x.shape)})"
        )
    return x


def _labels(y: np.ndarray, n: int, spec: str, purpose: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise EdgecError(f"{purpose} data '{spec}': labels 'y' have shape {tuple(y.shape)}, expected ({n},) to match 'x'")
    return y.astype(np.int64)
