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

A model with several inputs takes data keyed by its input names: an ``.npz`` with one array per
input (``y`` stays the labels), or a function yielding dicts (or ``(dict, y)`` pairs). Its
:attr:`Dataset.x` is then a dict in the model's input order; the preprocessing applies to each
uint8 input on its own, float inputs are taken as they are. An image folder or an ``.npy`` holds
one array and feeds only a single-input model.

Data is checked where it enters, the same way for calibration, fine-tune and eval data: inputs
must be finite (a NaN or Inf is named by file, sample and position), labels integers or one-hot
rows, archives readable, images at most :data:`MAX_IMAGE_PIXELS` pixels each, and a function's
batches are read up to :data:`MAX_SAMPLES` samples (or :data:`MAX_BYTES`), so an endless
generator ends. The checks take one array and its name, so they apply per input.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgec.calibration.data import (  # noqa: F401  (part of this API)
    ARCHIVE_ERRORS,
    MAX_BYTES,
    MAX_SAMPLES,
    Dataset,
    Inputs,
    as_array,
    check_finite,
    check_labels,
    check_shape,
    count,
    load_callable,
    take,
    unreadable_error,
)
from edgec.calibration.inputs import InputPreprocessing, arrays  # noqa: F401  (arrays: part of this API)
from edgec.errors import EdgecError

log = logging.getLogger(__name__)

#: Largest image (width x height) read from an image folder; a larger one is refused as a
#: decompression bomb (Pillow's own limit is set to this value while edgec reads images).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


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
        input_shape: model input shape without the batch dimension (``None`` = any size); for a
            model with several inputs, ``{input name: shape}`` in the model's input order.
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
    if isinstance(input_shape, Mapping):
        from edgec.calibration.several import load_several

        return load_several(spec_str, path, is_callable, dict(input_shape), purpose=purpose, limit=limit, seed=seed,
                            need_labels=need_labels, preprocess=preprocess)
    if path.is_dir():
        x, y = _load_image_folder(path, input_shape, purpose)
    elif path.suffix.lower() == ".npz":
        x, y = _load_npz(path, purpose)
    elif path.suffix.lower() == ".npy":
        x, y = _load_npy(path, purpose), None
    elif is_callable:
        x, y = load_callable(spec_str, purpose, limit)
    else:
        raise EdgecError(
            f"{purpose} data '{spec_str}' has an unknown format; expected .npz (x, y), .npy, "
            "a folder of images, or module:function"
        )
    x = check_shape(as_array(x, spec_str, purpose, "inputs"), input_shape, spec_str, purpose)
    check_finite(x, spec_str, purpose)
    if y is not None:
        y = check_labels(as_array(y, spec_str, purpose, "labels"), len(x), spec_str, purpose)
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
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise EdgecError(f"{purpose} data '{path}' holds a single .npy array, not an .npz archive of named "
                             "arrays; name it .npy, or save it with numpy.savez(path, x=..., y=...)")
        with data:
            if "x" not in data.files:
                raise EdgecError(f"{purpose} data '{path}' has no array 'x'; found {sorted(data.files)}")
            return data["x"], (data["y"] if "y" in data.files else None)
    except EdgecError:
        raise
    except ARCHIVE_ERRORS as exc:
        raise unreadable_error(path, purpose, "an .npz archive (numpy.savez)", exc) from exc


def _load_npy(path: Path, purpose: str):
    try:
        data = np.load(path, allow_pickle=False)
    except ARCHIVE_ERRORS as exc:
        raise unreadable_error(path, purpose, "an .npy array (numpy.save)", exc) from exc
    if not isinstance(data, np.ndarray):
        data.close()
        raise EdgecError(f"{purpose} data '{path}' is an .npz archive; name it .npz")
    return data


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
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow warns above it and refuses above twice it
    for p in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise Image.DecompressionBombError(f"{im.width}x{im.height}")
                    im = im.convert(mode).resize((width, height), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32)  # pixels 0..255; the build's preprocessing scales them
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise EdgecError(f"image '{p}' is {_image_size(p)}; images are read up to {MAX_IMAGE_PIXELS:,} pixels "
                             "each (a guard against decompression bombs); resize it first") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            # Pillow's decoders raise any of these on damaged files
            raise EdgecError(f"cannot read image '{p}': {type(exc).__name__}: {exc}") from exc
        images.append(arr.reshape(height, width, channels))
        if labelled:
            labels.append(classes.index(p.relative_to(root).parts[0]))
    return np.stack(images), (np.asarray(labels) if labelled else None)


def _image_size(path: Path) -> str:
    """``WxH = N pixels`` from the image's header alone (nothing decoded)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return f"{im.width}x{im.height} = {im.width * im.height:,} pixels"
    except Exception:  # noqa: BLE001  (only for the message)
        return "too large"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


