"""Fixtures of the dashboard tests: the collector tests' real `edgec serve` and agent processes,
and headless Chromium (Debian's package) driven by Playwright without any browser download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _fleet_home(fleet_home):
    """Results, caches and tokens in the test's tmp dir (the fleet fixtures: tests/helpers/fleet.py)."""


CHROMIUM = os.environ.get("EDGEC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (a fresh profile); skipped with the reason when it cannot be had."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright "
                                   "(pip install -e '.[dev]')")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium: apt-get install chromium (make setup and .ci/run do it where they can)")
    with sync_api.sync_playwright() as pw:
        # Playwright gives each launch a fresh, temporary --user-data-dir, and each context its own
        # cookies: an anonymous context shares nothing with a signed-in one
        chromium = pw.chromium.launch(executable_path=executable, args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))


@pytest.fixture
def open_page(browser):
    """New browser contexts (no cookies shared) with watched pages; closed at the end."""
    contexts = []

    def new(**options) -> Watched:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, **options)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return Watched(context)

    yield new
    for context in contexts:
        context.close()
