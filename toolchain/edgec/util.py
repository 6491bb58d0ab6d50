"""Small shared helpers: hashing, atomic output directories, strict JSON, native-stderr capture."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

log = logging.getLogger(__name__)


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
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "it is on a read-only file system" if read_only else "permission denied"
        raise EdgecError(f"output directory '{out}' is not writable (checked '{probe}': {why})")


#: Output folders whose lock this process holds, or its supervising parent holds for it.
_HELD_LOCKS: set[str] = set()

#: errno values that mean "this path cannot be written": the user's to fix, not a bug.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied")


def disk_error(exc: BaseException, where: Path | str | None = None) -> EdgecError | None:
    """An :class:`EdgecError` naming the path when ``exc`` is a full disk, a read-only file system
    or a denied permission (an ``OSError``, or a library error whose text says so); else None."""
    path = None
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        reason = exc.strerror or os.strerror(exc.errno)
        path = exc.filename
    else:
        text = str(exc)
        reason = next((t for t in _DISK_TEXTS if t in text), None)
        if reason is None:
            return None
    path = path or where
    what = f"'{path}'" if path else "the build"
    under = f" (building '{where}')" if where and str(path) != str(where) else ""
    return EdgecError(f"cannot write {what}: {reason}{under}")


def hold_locks(paths) -> None:
    """Record output folders whose lock a supervising parent holds for this process."""
    _HELD_LOCKS.update(str(Path(p).absolute()) for p in paths)


def lock_path(final: Path) -> Path:
    """The lock file of output folder ``final``: ``.NAME.lock`` beside it."""
    final = Path(final)
    return final.parent / f".{final.name}.lock"


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


@contextlib.contextmanager
def output_lock(final: Path, wait: bool = True) -> Iterator[None]:
    """Hold the lock of output folder ``final`` (``flock`` on ``.NAME.lock`` beside it).

    When another build holds it, wait for it (saying so in the log, naming that build's pid and
    start time) or, with ``wait=False``, fail at once naming it. The lock goes with the process
    that holds it, so a killed build never leaves a stale one. Re-entrant within a process. Parent
    folders it creates are removed again when they are left empty (a failed build leaves no empty
    ``--out``).

    Raises:
        EdgecError: another build holds the lock (``wait=False``); the folder cannot be created.
    """
    import datetime as _dt
    import fcntl

    final = Path(final)
    key = str(final.absolute())
    if key in _HELD_LOCKS:
        yield
        return
    created = []
    probe = final.parent
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    path = lock_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                if not wait:
                    os.close(fd)
                    raise EdgecError(f"another edgec build ({holder}) is writing '{final}'; wait for it to end, "
                                     "or build into another --out") from None
                log.warning("waiting for another edgec build (%s) writing '%s'", holder, final)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            try:  # the holder before us unlinks the file as it ends: then lock the new one
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
    except OSError as exc:
        _remove_empty(created)
        raise disk_error(exc, final.parent) or EdgecError(
            f"cannot create output directory under '{final.parent}': {exc.strerror}") from exc
    except BaseException:
        _remove_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.write(fd, json.dumps({"pid": os.getpid(), "started": started}).encode())
    except OSError:
        pass  # a full disk: the lock holds all the same, without its note
    _HELD_LOCKS.add(key)
    try:
        yield
    finally:
        _HELD_LOCKS.discard(key)
        with contextlib.suppress(OSError):
            os.unlink(path)  # before the unlock, so a waiting build retries on a fresh file
        os.close(fd)
        _remove_empty(created)


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def output_locks(finals, wait: bool = True) -> Iterator[None]:
    """:func:`output_lock` on several folders, in a fixed order (no two builds wait on each other)."""
    with contextlib.ExitStack() as stack:
        for final in sorted({str(Path(f).absolute()) for f in finals}):
            stack.enter_context(output_lock(Path(final), wait=wait))
        yield


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """Linux renameat2(2): atomic rename that never replaces (NOREPLACE) or swaps two paths (EXCHANGE).

    Raises:
        OSError: from the call; ``ENOSYS``/``EINVAL`` where the C library or file system lacks it.
    """
    import ctypes

    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dst))


def _move_into_place(tmp: Path, final: Path) -> None:
    """Put the complete ``tmp`` at ``final`` atomically: readers see the old folder or the new one."""
    try:
        try:
            _renameat2(tmp, final, _RENAME_NOREPLACE)
            return
        except FileExistsError:
            _renameat2(tmp, final, _RENAME_EXCHANGE)  # tmp now holds the old build
            shutil.rmtree(tmp, ignore_errors=True)
            return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise
    # no renameat2 here: under the folder's lock no other build renames, so aside-then-swap is safe
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rename(final, old / "build")
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; move it into place only on success.

    The folder's lock (:func:`output_lock`) is held throughout. A failed build leaves neither a
    partial ``final`` nor the temporary directory; an existing ``final`` is replaced only once the
    new one is complete, in one atomic rename. A full disk or a read-only folder is an
    :class:`EdgecError` naming the path.
    """
    final = Path(final)
    with output_lock(final):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        except OSError as exc:
            raise disk_error(exc, final.parent) or EdgecError(
                f"cannot create output directory under '{final.parent}': {exc.strerror}") from exc
        try:
            yield tmp
            _move_into_place(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            problem = disk_error(exc, final) if not isinstance(exc, EdgecError) else None
            if problem is not None:
                raise problem from exc
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


def finite_json(value: Any) -> tuple[Any, list[str]]:
    """``value`` with every NaN or infinite float replaced by ``None`` (numpy scalars and arrays,
    paths and tuples made plain), and the JSON paths of the replaced numbers."""
    replaced: list[str] = []

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, dict):
            return {k: walk(item, f"{where}.{k}") for k, item in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(item, f"{where}[{i}]") for i, item in enumerate(v)]
        if isinstance(v, bool) or v is None or isinstance(v, (str, int)):
            return v
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            replaced.append(where or "$")
            return None
        if isinstance(v, Path):
            return str(v)
        if type(v).__module__ == "numpy":
            return walk(v.tolist() if hasattr(v, "tolist") else v.item(), where)
        return v  # json.dumps names what it cannot write

    return walk(value, ""), replaced


def dumps_json(value: Any, *, what: str = "JSON output", **kwargs: Any) -> str:
    """Strict JSON text (RFC 8259): a NaN or Infinity becomes ``null`` with a warning naming where,
    since most readers (JavaScript, Go, jq, PostgreSQL) refuse the bare ``NaN`` Python writes.

    Args:
        value: what to write.
        what: names the document in the warning.
        **kwargs: passed to :func:`json.dumps` (``indent``, ``sort_keys``, ``separators``, ``default``).
    """
    clean, replaced = finite_json(value)
    if replaced:
        log.warning("%s: %d non-finite number%s written as null (%s%s)", what, len(replaced),
                    "s" if len(replaced) != 1 else "", ", ".join(r.lstrip(".") for r in replaced[:5]),
                    ", ..." if len(replaced) > 5 else "")
    return json.dumps(clean, allow_nan=False, **kwargs)
