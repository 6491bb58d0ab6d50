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

import dataclasses
import logging
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from edgec.calibration.inputs import InputPreprocessing, arrays  # noqa: F401  (arrays: part of this API)
from edgec.errors import EdgecError, Interrupted
from edgec.util import load_function

log = logging.getLogger(__name__)

#: Largest image (width x height) read from an image folder; a larger one is refused as a
#: decompression bomb (Pillow's own limit is set to this value while edgec reads images).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
#: Most samples read from a ``module:function`` without a sample limit (eval, fine-tune data);
#: the rest of an endless or very long generator is left unread, with a warning.
MAX_SAMPLES = 100_000
#: Most bytes of input read from a ``module:function`` without a sample limit.
MAX_BYTES = 2 << 30

# What reading a damaged archive raises, besides OSError and ValueError: a 0-byte file
# (EOFError), a cut or foreign zip (BadZipFile), a corrupt member (zlib.error, KeyError).
ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


#: Inputs of a model: one array (batch first), or {input name: array} for several inputs.
Inputs = np.ndarray | dict


def count(x: Inputs) -> int:
    """The number of samples in ``x`` (one array, or a dict of arrays of the same length)."""
    if isinstance(x, dict):
        return int(len(next(iter(x.values())))) if x else 0
    return int(len(x))


def take(x: Inputs, index) -> Inputs:
    """``x[index]`` (a slice or an index array) of one array, or of every input of a dict."""
    if isinstance(x, dict):
        return {name: arr[index] for name, arr in x.items()}
    return x[index]


@dataclasses.dataclass
class Dataset:
    """Inputs (float32, batch first; a dict keyed by input name for several inputs) and optional
    integer labels."""

    x: Inputs
    y: np.ndarray | None
    source: str
    total: int  # samples available before sub-sampling
    pixels: bool = False  # loaded as 8-bit pixels and preprocessed into model input (any input)
    pixel_inputs: tuple[str, ...] = ()  # the inputs that were pixels, with several inputs

    def __len__(self) -> int:
        return count(self.x)

    def describe(self) -> dict:
        out = {"source": self.source, "samples": len(self), "available": self.total,
               "labelled": self.y is not None, "preprocessed_pixels": self.pixels}
        if isinstance(self.x, dict):
            out["inputs"] = {name: {"range": _range(arr), "preprocessed_pixels": name in self.pixel_inputs}
                             for name, arr in self.x.items()}
        elif self.x.size:
            out["range"] = _range(self.x)
        return out


def _range(x: np.ndarray) -> list[float] | None:
    return [round(float(x.min()), 6), round(float(x.max()), 6)] if x.size else None


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


def unreadable_error(path: Path, purpose: str, expected: str, exc: BaseException) -> EdgecError:
    size = path.stat().st_size if path.is_file() else None
    if size == 0:
        why = "the file is empty (0 bytes)"
    elif isinstance(exc, (EOFError, zipfile.BadZipFile, zlib.error)):
        why = f"the file is truncated or of another format ({type(exc).__name__}: {exc})"
    elif isinstance(exc, ValueError) and "pickle" in str(exc):
        why = "the file has neither a zip nor an .npy header (pickled data is never read)"
    else:
        why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else (exc.strerror or str(exc))
    return EdgecError(f"cannot read {purpose} data '{path}' as {expected}: {why}")


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


def load_callable(spec: str, purpose: str, limit: int | None, batch_inputs=None):
    """The concatenated batches of a data function; ``batch_inputs(batch)`` turns one batch's
    inputs into an array (default: ``np.asarray``), or a dict of arrays for several inputs."""
    func = load_function(spec, f"{purpose} data '{spec}'", "_edgec_data_")
    batch_inputs = batch_inputs or np.asarray
    xs, ys, count, nbytes, cut = [], [], 0, 0, False
    try:
        batches: Iterable = func()
        for batch in batches:
            if isinstance(batch, (tuple, list)) and len(batch) == 2:
                bx, by = batch_inputs(batch[0]), np.asarray(batch[1])
                first = next(iter(bx.values())) if isinstance(bx, dict) else bx
                if first.ndim == 0:
                    raise EdgecError(f"{purpose} data '{spec}' yielded a scalar input; expected batches of samples")
                ys.append(by.reshape(len(first), *by.shape[1:]) if by.ndim else by.reshape(1))
            else:
                bx = batch_inputs(batch)
                first = next(iter(bx.values())) if isinstance(bx, dict) else bx
                if first.ndim == 0:
                    raise EdgecError(f"{purpose} data '{spec}' yielded a scalar; expected batches of samples")
            xs.append(bx)
            count += len(first)
            nbytes += sum(a.nbytes for a in bx.values()) if isinstance(bx, dict) else bx.nbytes
            if limit is not None and count >= 4 * limit:  # enough to draw a sample from
                break
            if limit is None and (count >= MAX_SAMPLES or nbytes >= MAX_BYTES):
                cut = True
                break
    except (EdgecError, Interrupted):
        raise
    except BaseException as exc:  # SystemExit or KeyboardInterrupt from the function is the data's failure
        what = type(exc).__name__ + (f"({exc})" if isinstance(exc, SystemExit) else f": {exc}" if str(exc) else "")
        raise EdgecError(f"{purpose} data '{spec}' raised {what}") from exc
    if cut:
        log.warning("%s data '%s' yields more than %s samples (or %s bytes); using the first %d", purpose, spec,
                    f"{MAX_SAMPLES:,}", f"{MAX_BYTES:,}", count)
    if not xs:
        raise EdgecError(f"{purpose} data '{spec}' yielded no batches")
    if ys and len(ys) != len(xs):
        raise EdgecError(f"{purpose} data '{spec}' mixes (x, y) pairs and bare batches")
    try:
        if isinstance(xs[0], dict):
            x = {name: np.concatenate([b[name] for b in xs]) for name in xs[0]}
        else:
            x = np.concatenate(xs)
    except ValueError as exc:
        raise EdgecError(f"{purpose} data '{spec}' yielded batches of different shapes: {exc}") from exc
    return x, (np.concatenate(ys) if ys else None)


def as_array(value, spec: str, purpose: str, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists, objects numpy cannot hold
        raise EdgecError(f"{purpose} data '{spec}': the {what} are not an array of numbers ({exc})") from exc


def check_finite(x: np.ndarray, source: str, purpose: str = "calibration", name: str | None = None) -> None:
    """Refuse NaN and Inf in one input array, naming the first one by sample and position.

    Args:
        x: the inputs, batch first.
        source: the file or function they came from.
        purpose: "calibration", "eval", "fine-tune".
        name: the input's name (array key) when the data has several.

    Raises:
        EdgecError: a value is NaN or infinite.
    """
    if x.dtype.kind not in "fc" or x.size == 0:
        return
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    value = x[first]
    where = f" input '{name}'" if name else ""
    raise EdgecError(
        f"{purpose} data '{source}'{where} holds {value} at sample {first[0]}, position {first[1:]} "
        f"({int(bad.sum())} non-finite value{'s' if bad.sum() != 1 else ''} in all); inputs must be finite numbers"
    )


def check_labels(y: np.ndarray, n: int, source: str, purpose: str = "eval", name: str | None = None) -> np.ndarray:
    """Integer class labels from integer labels or one-hot rows, as int64.

    Raises:
        EdgecError: labels that are text, NaN, fractional, not one-hot, or not one per sample.
    """
    where = f"'{source}'" + (f" input '{name}'" if name else "")
    if y.dtype.kind not in "iub" and y.dtype.kind != "f":
        raise EdgecError(f"{purpose} data {where}: labels 'y' have dtype {y.dtype}; expected integer class "
                         "labels or one-hot rows")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise EdgecError(f"{purpose} data {where}: label {y[first]} at sample {first[0]}; expected integer class "
                             "labels or one-hot rows")
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        hot = (y == 0) | (y == 1)
        rows_ok = hot.all(axis=1) & (y.sum(axis=1) == 1)
        if not rows_ok.all():
            i = int(np.argmin(rows_ok))
            row = ", ".join(f"{v:g}" for v in np.asarray(y[i], dtype=np.float64)[:6])
            raise EdgecError(f"{purpose} data {where}: labels 'y' at sample {i} are [{row}"
                             f"{', ...' if y.shape[1] > 6 else ''}]; expected one-hot rows (a single 1, the rest 0) "
                             "or integer class labels")
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise EdgecError(f"{purpose} data {where}: labels 'y' have shape {tuple(y.shape)}, expected ({n},) to "
                         "match 'x'")
    if y.dtype.kind == "f":
        fractional = y != np.round(y)
        if fractional.any():
            i = int(np.argmax(fractional))
            raise EdgecError(f"{purpose} data {where}: label {y[i]:g} at sample {i} is not a whole number; "
                             "expected integer class labels or one-hot rows")
        if np.abs(y).max(initial=0) >= 2 ** 62:
            raise EdgecError(f"{purpose} data {where}: label {y[np.argmax(np.abs(y))]:g} is out of range for a class")
    return y.astype(np.int64)


def check_shape(x: np.ndarray, input_shape, spec: str, purpose: str, name: str | None = None) -> np.ndarray:
    expected = tuple(input_shape)
    if name is not None:
        spec = f"{spec}' input '{name}"  # quoted as: data 'SPEC' input 'NAME'
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
