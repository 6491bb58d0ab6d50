"""Every command block of README.md and the guides under docs/ runs as written.

The blocks of a page run in order in one shell (see ``blocks.py`` for the conventions); a block
marked ``<!-- skip: REASON -->`` is reported as skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.blocks import Session, blocks

REPO = Path(__file__).resolve().parents[2]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
ALL = [b for page in PAGES for b in blocks(REPO / page, page)]
BLOCK_TIMEOUT = 300

pytestmark = pytest.mark.slow


def test_pages_are_found():
    """The walk-throughs are there to be run: README and the guides hold runnable blocks."""
    pages = {b.page for b in ALL if b.skip is None}
    assert "README.md" in pages
    assert {"docs/first-hour.md", "docs/collector.md", "docs/ci.md"} <= pages, sorted(pages)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch repository root: data folders linked, examples/ copied (its paths lead to
    ../build), build/demo trained as ``make demo`` trains it, HOME inside it."""
    root = tmp_path_factory.mktemp("docroot")
    for name in ("profiles", "targets", "calibration", "bench", "toolchain", "tests", "docs"):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "examples", root / "examples")
    (root / "home").mkdir()
    return root


@pytest.fixture(scope="module")
def env(workdir) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEC_", "PYTEST"))}
    env.update(PATH=f"{venv_bin}:{env.get('PATH', '')}", HOME=str(workdir / "home"),
               VIRTUAL_ENV=str(Path(venv_bin).parent), EDGEC_PROGRESS="0")
    return env


@pytest.fixture(scope="module")
def sessions(workdir, env):
    opened: dict[str, Session] = {}
    failed: dict[str, str] = {}
    yield opened, failed
    for session in opened.values():
        session.close()


@pytest.fixture(scope="module")
def demo(workdir, env) -> Path:
    """build/demo as `make demo` leaves it, for the guides that start from it."""
    out = workdir / "build" / "demo"
    if not (out / "digits_cnn.keras").exists():
        subprocess.run([sys.executable, "-m", "edgec.examples", "--out", str(out)], cwd=workdir,
                       env=env, check=True, capture_output=True)
    return out


@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_block(block, workdir, env, sessions, request):
    opened, failed = sessions
    if block.skip:
        pytest.skip(block.skip)
    if block.page in failed:
        pytest.skip(f"an earlier block of {block.page} failed ({failed[block.page]})")
    if block.page != "README.md":  # the README trains build/demo itself; the guides start from it
        request.getfixturevalue("demo")
    if block.page not in opened:
        for page in [p for p in opened if p != block.page]:  # one page's servers at a time
            opened.pop(page).close()
        opened[block.page] = Session(workdir, env)
    ok, output = opened[block.page].run(block, BLOCK_TIMEOUT)
    if not ok:
        failed[block.page] = block.id
        pytest.fail(f"{block.id} ({block.lang}) failed:\n{output[-6000:]}\n--- block ---\n{block.code}",
                    pytrace=False)
