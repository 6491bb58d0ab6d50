"""The command blocks of README.md and docs/*.md, and a shell session that runs them in order.

Conventions (docs/development.md, "Doc tests"):

* Every fenced block whose info string is ``sh``, ``bash`` or ``python`` is run, in page order,
  in one bash session per page: variables, ``cd``, background jobs carry over from block to block,
  as for a reader who pastes them into one terminal. ``text``, ``toml``, ``yaml`` and unlabelled
  blocks are shown, not run.
* ``<!-- skip: REASON -->`` on the line before a block leaves it out; the test is reported as
  skipped with REASON (a device it needs, a long training, a placeholder path).
* A block that starts a server runs it in the background (``CMD > LOG 2>&1 &``, ``PID=$!``) on
  127.0.0.1 and waits for its first line; a later block of the page stops it (``kill $PID``).
  Whatever is still running when the page ends is stopped with its process group.
* Pages run in a scratch copy of the repository root (the data folders linked, ``examples/``
  copied), after ``python -m edgec.examples --out build/demo`` (what ``make demo`` writes first).
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

RUN_LANGS = {"sh": "sh", "bash": "sh", "python": "python"}
SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")


@dataclasses.dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str  # "sh" or "python"
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path, page: str) -> list[Block]:
    """The runnable blocks of one Markdown page, in order."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in RUN_LANGS:
            continue
        before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(before.strip())
        found.append(Block(page, start + 1, RUN_LANGS[lang], "\n".join(body) + "\n",
                           skip.group(1) if skip else None))
    return found


class Session:
    """One bash process per page; each block is sourced into it and its failures are counted."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd = cwd
        self.count = 0
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._send("set -o pipefail; trap '__failed=\"$__failed line $LINENO: $BASH_COMMAND;\"' ERR\n")

    def _send(self, text: str) -> None:
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, block: Block, timeout: float) -> tuple[bool, str]:
        """Run one block; (ok, what it printed). A command that fails anywhere in it fails it."""
        self.count += 1
        scripts = self.cwd / ".doc-blocks"
        scripts.mkdir(exist_ok=True)
        marker = f"__BLOCK_DONE_{os.getpid()}_{self.count}__"
        if block.lang == "python":
            script = scripts / f"{self.count}.py"
            script.write_text(block.code)
            command = f"python {script}\n"
        else:
            script = scripts / f"{self.count}.sh"
            script.write_text(block.code)
            command = f"source {script}\n"
        self._send(f"__failed=; {command}echo \"{marker} [${{__failed}}]\"\n")
        out, deadline = b"", time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while marker.encode() not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, out.decode(errors="replace") + f"\n(timed out after {timeout:.0f} s)"
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return False, out.decode(errors="replace") + "\n(the shell exited)"
                out += chunk
        text = out.decode(errors="replace")
        before, _, after = text.partition(marker)
        failed = after.split("\n", 1)[0].strip()
        return failed == "[]", before + ("" if failed == "[]" else f"\nfailed: {failed}")

    def close(self) -> None:
        """End the shell and everything it left running (servers, agents) with its process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
