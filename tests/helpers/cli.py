"""Assertions on what the command line prints."""

from __future__ import annotations


def assert_one_line_error(proc, code: int, *needles: str):
    """``proc`` exited with ``code`` after one ``Error: ...`` line holding every needle, no traceback;
    that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
