"""Trial keys and the build cache: a configuration built and measured once is not built again.

A key is the sha256 of a canonical JSON document naming everything a result depends on: the
model (its file's sha256, or the builder's source and hyperparameters), the data (each file's
sha256), the device profile, the build options, the measurement settings and the library
versions. Builds go to ``OUT/builds/<key>/<profile>/`` and measurements beside them, so a
repeated configuration (TPE proposes the same one again, a resumed search, a Hyperband rung that
matches another trial's full budget) reuses them; the study itself holds every finished trial's
result, so workers on other machines reuse those by key as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgec.util import sha256_file

log = logging.getLogger(__name__)

KEY_CHARS = 24  # of the sha256's hex digits in directory names
VERSIONED = ("edgec", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy",
             "zstandard", "tf2onnx", "onnx", "onnxruntime")


def profile_doc(profile) -> dict[str, Any]:
    """A device profile as keys see it: what the device is, not where its file lies."""
    doc = profile.to_json()
    doc.pop("path", None)
    return doc


def digest(doc: Any) -> str:
    """sha256 of ``doc`` as canonical JSON."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a build's bytes depend on (without importing them)."""
    from importlib import metadata

    from edgec.version import __version__

    out: dict[str, str | None] = {}
    for name in VERSIONED:
        if name == "edgec":
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


_file_digests: dict[tuple[str, float, int], str] = {}


def data_digest(spec: str | Path | None) -> str | None:
    """sha256 of a data file or folder; a ``module:function`` spec (or a missing path) by its text."""
    if spec is None:
        return None
    path = Path(spec)
    if not path.exists():
        return "spec:" + str(spec)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if memo not in _file_digests:
        _file_digests[memo] = sha256_file(path)
    return _file_digests[memo]


class BuildCache:
    """Builds and measurements under ``root`` (``OUT/builds``), by key."""

    def __init__(self, root: Path, profile_id: str):
        self.root = Path(root)
        self.profile_id = profile_id

    def build_dir(self, key: str) -> Path:
        return self.root / key[:KEY_CHARS] / self.profile_id

    def built(self, key: str) -> Path | None:
        """The build directory of ``key`` when a complete build is there."""
        path = self.build_dir(key)
        return path if (path / "manifest.json").is_file() else None

    def build(self, key: str, model: Any, target: str, options: dict[str, Any]):
        """``edgec.build`` into the key's directory unless it is there; ``(build_dir, manifest, reused)``.

        Two workers building the same key write the same bytes (builds are deterministic), and each
        build moves into place whole, so either one's result is the other's.
        """
        from edgec import manifest as manifest_mod
        from edgec.pipeline import build

        found = self.built(key)
        if found is not None:
            return found, manifest_mod.read(found), True
        result = build(model, target=target, out=self.root / key[:KEY_CHARS], **options)
        return result.out_dir, result.manifest, False

    def measurement(self, build_key: str, measure_key: str) -> dict[str, Any] | None:
        path = self._measurement_path(build_key, measure_key)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def keep_measurement(self, build_key: str, measure_key: str, record: dict[str, Any]) -> None:
        path = self._measurement_path(build_key, measure_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".measure-", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)

    def _measurement_path(self, build_key: str, measure_key: str) -> Path:
        return self.root / build_key[:KEY_CHARS] / f"measure-{measure_key[:KEY_CHARS]}.json"
