"""What a model's input expects, and how 8-bit pixels get there.

Image folders, and uint8 arrays from ``.npz``/``.npy`` or ``module:function`` data, are pixels
(0..255). A model expects them scaled to a range (``--input-range 0,1|-1,1|0,255``) or
normalized per channel (``--normalize imagenet`` or ``--mean``/``--std``). Without an option edgec
infers it from a Rescaling or Normalization layer at the model's input (the model then takes raw
pixels), else assumes [0, 1]. Float data is taken as already preprocessed and only checked
against the expected range. The presets are data: ``calibration/presets.toml``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from functools import lru_cache
from typing import Any

import numpy as np

from edgec.errors import EdgecError, choices
from edgec.resources import data_file

PRESETS_FILE = data_file("calibration", "presets.toml")
DEFAULT_RANGE = "0,1"


def arrays(x) -> list[tuple[str | None, np.ndarray]]:
    """``(input name, array)`` pairs of a model's inputs (one array, or a dict by input name); a
    single array is one pair named None."""
    return list(x.items()) if isinstance(x, dict) else [(None, x)]


@lru_cache(maxsize=1)
def presets() -> dict[str, Any]:
    """``calibration/presets.toml``: ``range`` (name -> [lo, hi]) and ``normalize`` (name -> mean/std)."""
    try:
        with open(PRESETS_FILE, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgecError(f"cannot read the input presets '{PRESETS_FILE}': {exc}") from exc


def range_names() -> list[str]:
    return list(presets()["range"])


@dataclasses.dataclass(frozen=True)
class InputPreprocessing:
    """How pixels become model input: a range, or a per-channel normalization.

    Attributes:
        range: (lo, hi) that pixels 0..255 map onto linearly, or None with ``mean``/``std``.
        mean, std: per-channel normalization, ``(pixel / 255 - mean) / std`` (or
            ``(pixel - mean) / std`` with ``pixel_units``).
        source: where it came from: the option, the model layer it was inferred from, or "default".
    """

    range: tuple[float, float] | None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pixel_units: bool = False
    source: str = "default"
    name: str | None = None

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (0..255, any integer or float dtype) -> model input, float32."""
        x = np.asarray(pixels, dtype=np.float32)
        if self.range is not None:
            lo, hi = self.range
            return (lo + x * ((hi - lo) / 255.0)).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if x.shape[-1] != mean.size and mean.size != 1:
            raise EdgecError(f"--mean/--std have {mean.size} values, but the input has {x.shape[-1]} channels")
        scaled = x if self.pixel_units else x / 255.0
        return ((scaled - mean) / std).astype(np.float32)

    def expected(self) -> tuple[float, float]:
        """The range model inputs take when fed pixels 0..255."""
        if self.range is not None:
            return self.range
        ends = self.apply(np.array([0.0, 255.0], dtype=np.float32).reshape(2, 1) * np.ones((1, len(self.mean))))
        return float(ends.min()), float(ends.max())

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "applies_to": "image folders and uint8 (pixel) arrays"}
        if self.range is not None:
            out["range"] = list(self.range)
            out["formula"] = f"{self.range[0]:g} + pixel * {(self.range[1] - self.range[0]) / 255.0:.6g}"
        else:
            out.update(mean=list(self.mean), std=list(self.std), normalize=self.name,
                       formula="(pixel - mean) / std" if self.pixel_units else "(pixel / 255 - mean) / std")
        return out


def parse_numbers(text, flag: str) -> tuple[float, ...]:
    if isinstance(text, (list, tuple)):
        values = text
    else:
        try:
            values = [float(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise EdgecError(f"{flag} '{text}': expected numbers separated by commas, e.g. 0.485,0.456,0.406") from None
    values = tuple(float(v) for v in values)
    if not values:
        raise EdgecError(f"{flag} needs at least one number")
    if not all(np.isfinite(values)):
        raise EdgecError(f"{flag} '{text}': expected finite numbers, got {', '.join(f'{v:g}' for v in values)}")
    return values


def resolve(model, *, input_range: str | None = None, normalize: str | None = None,
            mean=None, std=None) -> tuple[InputPreprocessing, list[str]]:
    """The model's input preprocessing from the options, else from the model, else the default.

    Returns:
        The preprocessing and warnings (an option that contradicts the model's own first layer).

    Raises:
        EdgecError: an unknown range or preset, --mean without --std, a zero std, or options that
            exclude each other.
    """
    given = [f for f, v in (("--input-range", input_range), ("--normalize", normalize), ("--mean", mean)) if v]
    if len(given) > 1:
        raise EdgecError(f"{' and '.join(given)} both say how pixels become model input; give one")
    if (mean is None) != (std is None):
        raise EdgecError("--mean and --std go together (per-channel normalization: (pixel / 255 - mean) / std)")
    inferred = infer(model)
    warnings = []
    if input_range:
        table = presets()["range"]
        if input_range not in table:
            raise EdgecError(f"unknown --input-range '{input_range}'; valid: {', '.join(table)}")
        chosen = InputPreprocessing(tuple(float(v) for v in table[input_range]), source=f"--input-range {input_range}",
                                    name=input_range)
    elif normalize:
        table = presets().get("normalize", {})
        if normalize not in table:
            raise EdgecError(f"unknown --normalize '{normalize}'; valid: {choices(table)}")
        p = table[normalize]
        chosen = InputPreprocessing(None, tuple(p["mean"]), tuple(p["std"]), bool(p.get("pixel_units")),
                                    source=f"--normalize {normalize}", name=normalize)
    elif mean is not None:
        m, s = parse_numbers(mean, "--mean"), parse_numbers(std, "--std")
        if len(m) != len(s):
            raise EdgecError(f"--mean has {len(m)} values and --std {len(s)}; give one per channel (or one for all)")
        if any(v <= 0 for v in s):
            raise EdgecError(f"--std values must not be 0 or negative (a spread), got {', '.join(f'{v:g}' for v in s)}")
        chosen = InputPreprocessing(None, m, s, pixel_units=any(abs(v) > 1.0 for v in (*m, *s)),
                                    source="--mean/--std")
    elif inferred is not None:
        return inferred, warnings
    else:
        table = presets()["range"]
        return InputPreprocessing(tuple(float(v) for v in table[DEFAULT_RANGE]), source="default",
                                  name=DEFAULT_RANGE), warnings
    if inferred is not None and inferred.range is not None and inferred.range != chosen.expected():
        warnings.append(f"{chosen.source} maps pixels to [{chosen.expected()[0]:g}, {chosen.expected()[1]:g}], but the "
                        f"model {inferred.source.removeprefix('inferred ')} expects [{inferred.range[0]:g}, "
                        f"{inferred.range[1]:g}]; check that this is what the model was trained on")
    return chosen, warnings


def infer(model) -> InputPreprocessing | None:
    """The range a model's inputs take when its first layer is a Rescaling or Normalization layer
    (it then takes raw pixels and scales them itself); None otherwise."""
    layers = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    kind = type(first).__name__
    table = presets()["range"]
    if kind == "Rescaling":
        scale, offset = float(np.mean(first.scale)), float(np.mean(first.offset))
        if scale == 0:
            return None
        target = (-1.0, 1.0) if offset < 0 else (0.0, 1.0)
        raw = ((target[0] - offset) / scale, (target[1] - offset) / scale)
        what = f"Rescaling(scale={scale:.6g}, offset={offset:g})"
    elif kind == "Normalization":
        mean = np.asarray(first.mean, dtype=np.float64).ravel()
        std = np.sqrt(np.asarray(first.variance, dtype=np.float64).ravel())
        raw = (float((mean - 2 * std).min()), float((mean + 2 * std).max()))
        what = f"Normalization(mean {float(mean.mean()):.4g}, std {float(std.mean()):.4g})"
    else:
        return None
    name = min(table, key=lambda n: abs(table[n][0] - raw[0]) + abs(table[n][1] - raw[1]))
    return InputPreprocessing(tuple(float(v) for v in table[name]), name=name,
                              source=f"inferred from layer '{first.name}' ({what})")


def range_warning(x: np.ndarray, expected: tuple[float, float], what: str) -> str | None:
    """A line when data lies well outside the range the model expects, or fills a small part of it
    (data scaled for another range)."""
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    width = expected[1] - expected[0]
    outside = lo < expected[0] - 0.1 * width or hi > expected[1] + 0.1 * width
    narrow = (hi - lo) < 0.2 * width
    if outside or narrow:
        return (f"{what} spans [{lo:.4g}, {hi:.4g}], but the model input expects [{expected[0]:g}, {expected[1]:g}]: "
                "pass --input-range or --mean/--std to match the model's training (or rescale the data)")
    return None


def mismatch_warning(calib: np.ndarray, reference: np.ndarray, calib_what: str, ref_what: str) -> str | None:
    """A line when calibration data's range is far from the eval data's (it sets the int8 ranges)."""
    if calib.size == 0 or reference.size == 0:
        return None
    c_lo, c_hi, r_lo, r_hi = float(calib.min()), float(calib.max()), float(reference.min()), float(reference.max())
    width = max(r_hi - r_lo, 1e-12)
    if abs(c_lo - r_lo) > 0.25 * width or abs(c_hi - r_hi) > 0.25 * width:
        return (f"{calib_what} spans [{c_lo:.4g}, {c_hi:.4g}] but {ref_what} spans [{r_lo:.4g}, {r_hi:.4g}]: int8 "
                "ranges calibrated on it will not fit the data the model sees; preprocess both the same way")
    return None


def inputs_record(specs, preprocessing: dict[str, Any], datasets: dict[str, Any]) -> list[dict[str, Any]]:
    """The build manifest's ``inputs``: every model input (name, shape, dtype, in the model's order),
    the preprocessing it got, and the range of each data set on it.

    Args:
        specs: :func:`edgec.model_io.input_specs` of the model.
        preprocessing: the build's ``InputPreprocessing.describe()``.
        datasets: "calib", "eval", "fine_tune" -> :class:`edgec.calibration.Dataset` (or None).
    """
    out = []
    for spec in specs:
        entry = {**spec.describe(), "ranges": {}}
        pixels = False
        for role, data in datasets.items():
            if data is None:
                continue
            for name, arr in arrays(data.x):
                if name is None or name == spec.name:
                    entry["ranges"][role] = [round(float(arr.min()), 6), round(float(arr.max()), 6)] if arr.size else None
                    pixels = pixels or (data.pixels if name is None else name in data.pixel_inputs)
        entry["preprocessing"] = preprocessing if pixels else "none: float data taken as given"
        out.append(entry)
    return out
