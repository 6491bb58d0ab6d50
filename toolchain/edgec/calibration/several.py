"""Data for a model with several inputs: one array per input, keyed by the model's input names.

* ``data.npz``: one array per input name, and optionally ``y`` (the labels);
* ``module:function``: batches that are dicts ``{input name: array}``, or ``(dict, y)`` pairs.

A missing or extra key is refused naming the keys the model expects. An image folder or an
``.npy`` holds one array, so it only feeds a single-input model. Every check of the
single-input loader (dtype, shape, finite values) runs per input and names it; the inputs must
hold the same number of samples. The pixel preprocessing applies to each uint8 input on its own
(float inputs are taken as already preprocessed), so an image beside a float side vector gets
``--input-range``/``--normalize`` and the side vector does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.calibration.data import (
    ARCHIVE_ERRORS,
    Dataset,
    as_array,
    check_finite,
    check_labels,
    check_shape,
    load_callable,
    unreadable_error,
)
from edgec.calibration.inputs import InputPreprocessing
from edgec.errors import EdgecError


def _expected(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def check_keys(keys, names: list[str], spec: str, purpose: str, where: str) -> None:
    """Refuse data whose keys are not exactly the model's input names (``y`` aside).

    Raises:
        EdgecError: a key is missing or extra; the message names the expected keys.
    """
    keys = [str(k) for k in keys if k != "y"]
    missing = [n for n in names if n not in keys]
    extra = [k for k in keys if k not in names]
    if missing or extra:
        said = "; ".join(part for part in (f"missing {_expected(missing)}" if missing else "",
                                           f"extra {_expected(extra)}" if extra else "") if part)
        raise EdgecError(f"{purpose} data '{spec}' {where} {_expected(keys) or 'no inputs'} ({said}); the model has "
                         f"{len(names)} inputs and expects one array per input named {_expected(names)} "
                         "(plus 'y' for labels)")


def _load_npz(path: Path, names: list[str], purpose: str):
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise EdgecError(f"{purpose} data '{path}' holds a single .npy array, but the model has {len(names)} "
                             f"inputs; save one array per input with numpy.savez(path, "
                             f"{', '.join(f'{n}=...' for n in names)}, y=...)")
        with data:
            check_keys(data.files, names, str(path), purpose, "has arrays")
            return {n: data[n] for n in names}, (data["y"] if "y" in data.files else None)
    except EdgecError:
        raise
    except ARCHIVE_ERRORS as exc:
        raise unreadable_error(path, purpose, "an .npz archive (numpy.savez)", exc) from exc


def load_several(spec: str, path: Path, is_callable: bool, shapes: dict, *, purpose: str, limit: int | None,
                 seed: int, need_labels: bool, preprocess):
    """:func:`edgec.calibration.load` for a model with several inputs (``shapes``: name -> shape,
    in the model's input order); returns a :class:`~edgec.calibration.Dataset` whose ``x`` is a
    dict in that order."""
    names = list(shapes)
    if path.is_dir():
        raise EdgecError(f"{purpose} data '{spec}' is an image folder, which feeds a single-input model; this model "
                         f"has {len(names)} inputs ({_expected(names)}): give an .npz with one array per input")
    if path.suffix.lower() == ".npz":
        x, y = _load_npz(path, names, purpose)
    elif path.suffix.lower() == ".npy":
        raise EdgecError(f"{purpose} data '{spec}' is one .npy array, but the model has {len(names)} inputs; give an "
                         f".npz with one array per input named {_expected(names)} (plus 'y' for labels)")
    elif is_callable:
        def batch_inputs(batch):
            if not isinstance(batch, dict):
                raise EdgecError(f"{purpose} data '{spec}' yielded a {type(batch).__name__}, but the model has "
                                 f"{len(names)} inputs; yield dicts keyed by {_expected(names)} (or (dict, y) pairs)")
            check_keys(batch, names, spec, purpose, "yielded keys")
            return {n: as_array(batch[n], spec, purpose, f"inputs '{n}'") for n in names}

        x, y = load_callable(spec, purpose, limit, batch_inputs)
    else:
        raise EdgecError(f"{purpose} data '{spec}' has an unknown format; a model with several inputs takes an .npz "
                         f"with one array per input ({_expected(names)}) or module:function yielding dicts")
    x = {n: check_shape(as_array(x[n], spec, purpose, f"inputs '{n}'"), shapes[n], spec, purpose, n)
         for n in names}
    counts = {n: len(a) for n, a in x.items()}
    if len(set(counts.values())) > 1:
        raise EdgecError(f"{purpose} data '{spec}' has inputs of different lengths "
                         f"({', '.join(f'{n}: {c}' for n, c in counts.items())} samples); every input needs one "
                         "array row per sample")
    for n, a in x.items():
        check_finite(a, spec, purpose, name=n)
    total = counts[names[0]]
    if y is not None:
        y = check_labels(as_array(y, spec, purpose, "labels"), total, spec, purpose)
    pixel_inputs = tuple(n for n, a in x.items() if a.dtype == np.uint8)
    prep = preprocess or InputPreprocessing((0.0, 1.0))
    x = {n: (prep.apply(a) if n in pixel_inputs else a) for n, a in x.items()}
    if need_labels and y is None:
        raise EdgecError(f"{purpose} data '{spec}' has no labels; add an array 'y' beside the inputs "
                         f"{_expected(names)}")
    if total == 0:
        raise EdgecError(f"{purpose} data '{spec}' is empty")
    if limit is not None and total > limit:
        idx = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        x = {n: a[idx] for n, a in x.items()}
        y = y[idx] if y is not None else None
    x = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in x.items()}
    return Dataset(x=x, y=y, source=spec, total=total, pixels=bool(pixel_inputs), pixel_inputs=pixel_inputs)
