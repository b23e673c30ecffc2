"""The browser tests' fixtures: a real stack (``tests.e2e.stack``), Debian's Chromium driven by
Playwright, and pages that fail the test on any console error or uncaught exception.

Chromium is ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``scripts/test-servers``
installs it), or ``QUARRY_TEST_CHROMIUM``; Playwright's own browser download is never used.
Without Chromium or the ``playwright`` package the tests skip with the reason, and fail under
``CI=true`` (``tests.servers.unavailable``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.launcher import Stack
from tests import servers
from tests.e2e.stack import running_stack

CHROMIUM = Path(os.environ.get("QUARRY_TEST_CHROMIUM", "/usr/bin/chromium"))
ADMIN_KEY = "qk-console-admin"
#: A laptop screen.
VIEWPORT = {"width": 1366, "height": 860}


# Module scope, both: Playwright's sync API runs its own event loop in this thread while it is
# open, which would break every asyncio test the session runs after these (and the stack would
# hold its processes for the rest of the session).
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("console"), ADMIN_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        servers.unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        servers.unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; scripts/test-servers "
                            "installs it)")
    # Chromium's sandbox needs an unprivileged user; CI and the dev machines run as root.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield b
        finally:
            b.close()


class ConsoleWatch:
    """Every console error and uncaught exception of a page. ``expecting`` admits the errors a
    step causes on purpose (Chromium logs each 4xx answer as "Failed to load resource"), and
    only within that step; ``check`` fails on anything else."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self._allowed: list[re.Pattern[str]] = []
        self._seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught exception: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        if any(p.search(msg.text) for p in self._allowed):
            self._seen.append(msg.text)
            return
        self.errors.append(f"console error: {msg.text} ({msg.location.get('url')})")

    @contextmanager
    def expecting(self, pattern: str) -> Iterator[None]:
        allowed = re.compile(pattern)
        self._allowed.append(allowed)
        before = len(self._seen)
        try:
            yield
        finally:
            self._allowed.remove(allowed)
        assert any(allowed.search(t) for t in self._seen[before:]), f"expected a console error matching {pattern!r}"

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture
def console_page(browser: Any, stack: Stack) -> Iterator[tuple[Any, ConsoleWatch]]:
    """A fresh tab (its own sessionStorage) at the stack's console; fails on console errors."""
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.base_url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = ConsoleWatch(page)
    try:
        yield page, watch
        watch.check()
    finally:
        context.close()
