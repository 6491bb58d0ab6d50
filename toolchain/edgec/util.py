"""Small shared helpers: hashing, atomic output directories, native-stderr capture."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgec.errors import EdgecError


def sha256_file(path: Path) -> str:
    """sha256 of a file, or of a directory's files (sorted relative paths and contents)."""
    digest = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(b"\0")
            _update_from_file(digest, child)
    else:
        _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def check_writable_dir(out: Path) -> None:
    """Fail early, before any heavy work, when ``out`` cannot hold a build.

    Raises:
        EdgecError: ``out`` is a file, or it (or its nearest existing parent) is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgecError(f"output directory '{out}' exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise EdgecError(f"output directory '{out}' is not writable (checked '{probe}')")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; move it into place only on success.

    A failed build leaves neither a partial ``final`` nor the temporary directory. An existing
    ``final`` is replaced only once the new one is complete.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise EdgecError(f"cannot create output directory under '{final.parent}': {exc.strerror}") from exc
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[list[str]]:
    """Capture what native code (TFLite converter, XNNPACK) writes to fd 2.

    The converter prints diagnostics straight to the C-level stderr; capturing keeps the CLI
    output readable and lets callers attach the text to an error message. Yields a list that
    holds the captured text once the block exits.
    """
    captured: list[str] = []
    if os.environ.get("EDGEC_DEBUG"):  # --debug: let native logs through
        yield captured
        return
    try:
        fd = 2
        saved = os.dup(fd)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def console(stderr: bool = False):
    """A rich Console for CLI output: wide tables when piped, no syntax highlighting."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 160, soft_wrap=False)


def load_function(spec: str, what: str, module_prefix: str):
    """The function named by ``module:function`` or ``file.py:function`` (a data loader, a
    search's model builder). ``what`` starts each error message (e.g. ``--builder 'SPEC'``);
    a file is imported as module ``<module_prefix><stem>``.

    Raises:
        EdgecError: no such file or module, an import that fails, or no such function.
    """
    import importlib
    import importlib.util
    import sys

    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise EdgecError(f"{what}: file '{target}' does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"{module_prefix}{file.stem}", file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(f"{what}: cannot import '{target}': {type(exc).__name__}: {exc}") from exc
    func = getattr(module, name, None)
    if not callable(func):
        raise EdgecError(f"{what}: '{target}' has no function '{name}'")
    return func
