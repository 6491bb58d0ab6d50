"""The loaded data of a build and the checks every loader runs on it.

:class:`Dataset` (inputs, labels, where they came from), the helpers over one array or a dict of
arrays (:func:`count`, :func:`take`), the reading of a ``module:function``
(:func:`load_callable`, bounded by :data:`MAX_SAMPLES` and :data:`MAX_BYTES`) and the checks
(:func:`as_array`, :func:`check_finite`, :func:`check_labels`, :func:`check_shape`,
:func:`unreadable_error`). The single-input loaders (:mod:`edgec.calibration`) and the
several-input ones (:mod:`edgec.calibration.several`) both build on this module.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgec.errors import EdgecError, Interrupted
from edgec.util import load_function

log = logging.getLogger("edgec.calibration")

#: Most samples read from a ``module:function`` without a sample limit (eval, fine-tune data);
#: the rest of an endless or very long generator is left unread, with a warning.
MAX_SAMPLES = 100_000
#: Most bytes of input read from a ``module:function`` without a sample limit.
MAX_BYTES = 2 << 30

# What reading a damaged archive raises, besides OSError and ValueError: a 0-byte file
# (EOFError), a cut or foreign zip (BadZipFile), a corrupt member (zlib.error, KeyError).
ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


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
