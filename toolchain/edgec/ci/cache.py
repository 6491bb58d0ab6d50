"""A content-addressed cache of build directories, one entry per model x target row.

A row's key is the sha256 of what its artifacts are made from: the model file's sha256, each data
file's sha256 (calibration, eval, fine-tune), every build option, the device profile, the output
directory (the manifest names it), and the versions of every library and converter (TensorFlow,
TF-MOT, LiteRT, tf2onnx, ONNX, ONNX Runtime, TensorRT, edgetpu_compiler, Python) and of edgec's
own sources. Data from ``module:function`` cannot be addressed by content: such rows are built
every time, and say so.

An entry keeps the build directory and the sha256 of each of its files. Before an entry is
reused every file is hashed again and compared, and the manifest's artifact hashes with them;
an entry that does not match is removed and the row rebuilt, never trusted.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgec.util import atomic_dir, sha256_file
from edgec.version import __version__

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
ENTRY = "entry.json"
BUILD = "build"


def default_dir() -> Path:
    """``$EDGEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgec/ci``, else ``~/.cache/edgec/ci``."""
    if os.environ.get("EDGEC_CACHE_DIR"):
        return Path(os.environ["EDGEC_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgec" / "ci"


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, Any]:
    """The versions of everything that shapes an artifact, without importing any of it."""
    from importlib import metadata

    from edgec.resources import ROOTS, data_dir
    from edgec.tfcompat import library_versions

    versions: dict[str, Any] = dict(library_versions())
    for dist in ("tensorrt", "h5py", "protobuf"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["edgetpu_compiler"] = _edgetpu_compiler_version()
    versions["nvidia_gpu"] = shutil.which("nvidia-smi") is not None  # decides whether a TensorRT engine is built
    # edgec's own code and rule tables: a change to either may change an artifact
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for root in [package, *(data_dir(name) for name in ROOTS)]:
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".json", ".toml")
                           and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes())
    versions["edgec_sources"] = digest.hexdigest()
    return versions


def _edgetpu_compiler_version() -> str | None:
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"present, version unknown ({exc})"
    return (proc.stdout or proc.stderr).strip() or "present, version unknown"


class Hashes:
    """sha256 of model and data files, each hashed once per run."""

    def __init__(self):
        self._done: dict[str, str] = {}

    def of(self, path: str | Path) -> str:
        key = str(Path(path).resolve())
        if key not in self._done:
            self._done[key] = sha256_file(Path(path))
        return self._done[key]


def data_material(options: dict[str, Any], hashes: Hashes) -> tuple[dict[str, str | None], str | None]:
    """The sha256 of each data option's files, and why the row cannot be cached (data made by
    code), if so."""
    out: dict[str, str | None] = {}
    for name in ("calib", "eval", "fine_tune"):
        spec = options.get(name)
        if not spec:
            out[name] = None
            continue
        path = Path(str(spec))
        if not path.exists():
            return out, (f"--{name.replace('_', '-')} {spec} is made by code, which cannot be addressed by content; "
                         "the row is built every time")
        out[name] = hashes.of(path)
    for spec in options.get("custom_objects") or ():  # code that shapes the model
        path = Path(str(spec))
        if not path.is_file():
            return out, (f"--custom-objects {spec} is a module, which cannot be addressed by content; the row is "
                         "built every time")
        out[f"custom_objects:{spec}"] = hashes.of(path)
    return out, None


def row_key(*, model_sha256: str, data: dict[str, str | None], options: dict[str, Any], profile: dict[str, Any],
            out_dir: Path, versions: dict[str, Any]) -> str:
    """The cache key of a row (a sha256 hex digest)."""
    material = {"cache_format": CACHE_FORMAT, "edgec": __version__, "model_sha256": model_sha256, "data": data,
                "options": options, "profile": profile, "out_dir": str(out_dir), "versions": versions}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """Entries ``ROOT/v1/KEY[:2]/KEY/`` holding ``entry.json`` and ``build/`` (the build directory)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, key: str) -> Path:
        return self.root / f"v{CACHE_FORMAT}" / key[:2] / key

    def lookup(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The verified entry of ``key``; or ``(None, why)`` when there is none (``why`` is None) or
        it did not verify (then it is removed)."""
        where = self._dir(key)
        if not where.exists():
            return None, None
        problem = None
        try:
            entry = json.loads((where / ENTRY).read_text())
            problem = self._verify(where, key, entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            entry, problem = None, f"unreadable entry ({type(exc).__name__}: {exc})"
        if problem is None:
            return entry, None
        log.warning("cache entry %s is corrupt (%s); removing it and rebuilding", key[:12], problem)
        shutil.rmtree(where, ignore_errors=True)
        return None, problem

    @staticmethod
    def _verify(where: Path, key: str, entry: dict[str, Any]) -> str | None:
        if entry.get("key") != key or entry.get("cache_format") != CACHE_FORMAT:
            return "its entry.json belongs to another key"
        build = where / BUILD
        files: dict[str, str] = entry["files"]
        present = {str(p.relative_to(build)) for p in build.rglob("*") if p.is_file()}
        if present != set(files):
            missing, extra = sorted(set(files) - present), sorted(present - set(files))
            return f"files missing {missing} or unexpected {extra}"
        for name, expected in files.items():
            actual = sha256_file(build / name)
            if actual != expected:
                return f"{name} has sha256 {actual[:12]}…, recorded {expected[:12]}…"
        manifest = json.loads((build / "manifest.json").read_text())
        for art in manifest.get("artifacts", []):
            if files.get(art["file"]) != art.get("sha256"):
                return f"{art['file']} does not match the manifest's sha256"
        return None

    def store(self, key: str, build_dir: Path, meta: dict[str, Any]) -> None:
        """Keep a copy of ``build_dir`` under ``key`` (written beside, then moved into place)."""
        where = self._dir(key)
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.tmp-", dir=where.parent))
        try:
            shutil.copytree(build_dir, tmp / BUILD)
            files = {str(p.relative_to(tmp / BUILD)): sha256_file(p) for p in sorted((tmp / BUILD).rglob("*"))
                     if p.is_file()}
            entry = {"cache_format": CACHE_FORMAT, "key": key, "files": files, "meta": meta,
                     "stored": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
            (tmp / ENTRY).write_text(json.dumps(entry, indent=1) + "\n")
            if where.exists():
                shutil.rmtree(where)
            os.replace(tmp, where)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def restore(self, key: str, dest: Path) -> None:
        """Copy the entry's build directory to ``dest`` (atomically: a complete copy or none)."""
        with atomic_dir(dest) as work:
            shutil.copytree(self._dir(key) / BUILD, work, dirs_exist_ok=True)
