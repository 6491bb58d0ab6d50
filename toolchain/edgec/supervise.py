"""``edgec build`` and ``edgec analyze`` from the command line: the heavy native work in a
supervised child process.

TensorFlow's converter, TF-MOT, tf2onnx and the runtimes are native code; a crash there (a
SIGSEGV on odd data, the kernel's OOM killer) would end the command with no message and leave
temporary folders behind. As ``edgec ci`` does per row (:mod:`edgec.ci.worker`), the build runs in
a ``spawn`` child that reports over a pipe: the step it is in, then its results or its error. The
parent checks the request first (no TensorFlow), holds the output folders' locks for the whole
build, forwards SIGINT/SIGTERM/SIGHUP to the child, and whatever way the child ends removes what
it left: the ``.PROFILE.tmp-*`` folders beside the outputs, the child's private temporary folder
(where TensorFlow writes its SavedModels) and an ``--out`` root the build created and left empty.

:func:`edgec.build` (the Python API) stays in the caller's process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from edgec.errors import EXIT_INTERNAL, EdgecError, Interrupted
from edgec.progress import Progress

log = logging.getLogger(__name__)

#: Set to "0" to build in the command's own process (debugging, measuring the child's cost).
ENV_SUPERVISE = "EDGEC_SUPERVISE"
#: Seconds a signalled child gets to clean up before it is killed.
GRACE_S = 20.0
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BuildCrashed(EdgecError):
    """The build process died from a signal (a crash in native code, the OOM killer): a bug, exit 3."""

    exit_code = EXIT_INTERNAL


class _ChildError(EdgecError):
    """An error the child raised, with the exit code it carried."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def enabled() -> bool:
    return os.environ.get(ENV_SUPERVISE, "1") not in ("0", "false", "no")


class _ReportingProgress(Progress):
    """The child's progress display; each step's name also goes to the parent."""

    def __init__(self, send):
        super().__init__()
        self._send = send

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None):
        self._send(("step", description))
        with super().task(description, total) as task:
            yield task


def _child(conn, func: str, args: tuple, kwargs: dict[str, Any], tmpdir: str, held: list[str], level: int) -> None:
    """The child: run ``func`` (``module:name``), then send ``("done", result)`` or the error; never raise."""
    os.environ["TMPDIR"] = tmpdir  # TensorFlow's SavedModels and the converter's files land here
    tempfile.tempdir = tmpdir
    interrupted: list[int] = []

    def on_signal(signum, frame):
        if not interrupted:  # once: a second signal must not break the cleanup of the first
            interrupted.append(signum)
            raise Interrupted(signum)

    for signum in _FORWARDED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, on_signal)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    debug = bool(os.environ.get("EDGEC_DEBUG"))
    try:
        import importlib

        import edgec  # noqa: F401  (sets the Keras environment before TensorFlow loads)
        from edgec.util import disk_error, hold_locks

        hold_locks(held)
        module, _, name = func.partition(":")
        result = getattr(importlib.import_module(module), name)(*args, progress=_ReportingProgress(conn.send),
                                                                 **kwargs)
        conn.send(("done", result))
    except Interrupted as exc:
        conn.send(("interrupted", exc.signum))
    except EdgecError as exc:
        conn.send(("error", {"message": str(exc), "exit_code": exc.exit_code,
                             "traceback": traceback.format_exc() if debug else None}))
    except BaseException as exc:  # noqa: BLE001  (a bug, or SystemExit from a library: reported, not lost)
        problem = disk_error(exc) if isinstance(exc, Exception) else None
        if problem is not None:
            conn.send(("error", {"message": str(problem), "exit_code": problem.exit_code,
                                 "traceback": traceback.format_exc() if debug else None}))
        else:
            conn.send(("internal", {"message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
    finally:
        conn.close()


def build(model: Any, target: str | list[str], **kwargs: Any):
    """:func:`edgec.pipeline.build` in a supervised child process (same arguments and results).

    The request is checked here first (no TensorFlow), and each ``OUT/PROFILE`` is locked for the
    whole build: a second build into it fails at once.

    Raises:
        EdgecError: bad input (checked here, before the child starts) or the child's error, with
            its exit code.
        BuildCrashed: the child died from a signal; the message names the step (exit 3).
        Interrupted: SIGINT, SIGTERM or SIGHUP reached this process (exit 128 + signal).
    """
    from edgec.pipeline import plan, plan_targets

    if not enabled():
        return call("edgec.pipeline:build", model, target, **kwargs)
    single = isinstance(target, (str, Path))
    requests = [plan(model, str(target), **kwargs)] if single else plan_targets(model, list(target), **kwargs)
    finals = [Path(r.options.out) / r.profile.id for r in requests]
    return call("edgec.pipeline:build", model, target, finals=finals, what="build", **kwargs)


def call(func: str, *args: Any, finals=(), what: str = "build", **kwargs: Any):
    """``func(*args, progress=..., **kwargs)`` (``func`` is ``module:name``) in a supervised child.

    Args:
        func: what the child runs; it takes a ``progress`` keyword and returns something picklable.
        finals: output folders the call writes: locked here (failing at once when another build
            holds one) and cleaned of temporary folders whatever way the child ends.
        what: names the work in messages ("build", "analysis").

    Raises:
        as :func:`build`.
    """
    from edgec.util import hold_locks, output_locks

    if not enabled():
        import importlib

        module, _, name = func.partition(":")
        return getattr(importlib.import_module(module), name)(*args, progress=Progress(), **kwargs)
    finals = [Path(f) for f in finals]
    with output_locks(finals, wait=False):  # a second build into OUT/PROFILE fails at once, naming this one
        held = [str(f.absolute()) for f in finals]
        tmpdir = tempfile.mkdtemp(prefix="edgec-build-")
        try:
            try:
                return _supervise(func, args, kwargs, tmpdir, held, what)
            except (BuildCrashed, _ChildError) as exc:
                # a library that failed on a full disk rarely says so (the converter reports a model
                # without outputs): a folder the build writes to that is full is the reason
                full = _full_disk([tmpdir, *(f.parent for f in finals)])
                if full is not None and exc.exit_code != 1:
                    raise EdgecError(f"cannot write '{full[0]}': No space left on device ({full[1]:,} bytes free; "
                                     f"the {what} failed with: {exc})") from exc
                raise
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
            for final in finals:  # ours alone under the lock: what a dead or stopped child left
                for leftover in final.parent.glob(f".{final.name}.tmp-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            hold_locks(())


#: A folder with less free space than this after a failed build is taken as the reason it failed.
FULL_BYTES = 1 << 20


def _full_disk(paths) -> tuple[str, int] | None:
    """The first of ``paths`` (or its nearest existing parent) on a file system with less than
    :data:`FULL_BYTES` free, and the bytes free there."""
    for path in paths:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            st = os.statvfs(probe)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if free < FULL_BYTES:
            return str(path), free
    return None


def _supervise(func: str, args: tuple, kwargs: dict[str, Any], tmpdir: str, held: list[str], what: str):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    level = logging.getLogger().getEffectiveLevel()
    proc = ctx.Process(target=_child, args=(send, func, args, kwargs, tmpdir, held, level), daemon=True)
    signals: list[tuple[int, float]] = []  # (signal, when)

    def forward(signum, frame):
        signals.append((signum, time.monotonic()))
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)

    previous = {s: signal.getsignal(s) for s in _FORWARDED}
    step, outcome = "starting", None
    try:
        for s in _FORWARDED:
            if previous[s] is not signal.SIG_IGN:
                signal.signal(s, forward)
        proc.start()
        send.close()
        while outcome is None:
            if signals and time.monotonic() - signals[0][1] > GRACE_S and proc.is_alive():
                proc.kill()  # it had its chance to clean up; the parent removes the rest
            if not receive.poll(0.2):
                if not proc.is_alive() and not receive.poll(0):
                    break
                continue
            try:
                kind, payload = receive.recv()
            except (EOFError, OSError):
                break
            if kind == "step":
                step = payload
            else:
                outcome = (kind, payload)
        proc.join(GRACE_S)  # its result is in: an exit handler that hangs must not hang the command
    finally:
        if proc.is_alive():  # an exception here (a bug) must not leave the child running
            proc.kill()
            proc.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
        receive.close()
    if signals and (outcome is None or outcome[0] != "done"):  # a build that completed first stands
        raise Interrupted(signals[0][0])
    if outcome is None:
        code = proc.exitcode
        how = signal.Signals(-code).name if code is not None and code < 0 and -code in signal.valid_signals() \
            else f"exit code {code}"
        raise BuildCrashed(f"the {what} process died ({how}) during step '{step}' (a crash in native code, or "
                           f"out of memory); the partial {what} was removed (rerun with --debug for the native log)")
    kind, payload = outcome
    if kind == "done":
        return payload
    if kind == "interrupted":
        raise Interrupted(payload)
    if payload.get("traceback") and os.environ.get("EDGEC_DEBUG"):
        log.error("in the %s process:\n%s", what, payload["traceback"].rstrip())
    if kind == "error":
        raise _ChildError(payload["message"], payload["exit_code"])
    raise _ChildError(f"internal error ({payload['message']}); rerun with --debug for the traceback", EXIT_INTERNAL)
