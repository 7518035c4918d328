"""One headless Chromium per test session; every browser test gets fresh browser contexts.

Why: each browser test used to start the Playwright driver and launch its own Chromium
(~0.5 s driver + ~0.3 s launch + ~0.2 s close on the 2-core CI machine, ~45 times a run). A
BrowserContext is Chromium's incognito profile: its own cookies, storage, HTTP cache and service
workers, so a test in a fresh context sees what it saw in a fresh browser.

The browser is missing = the setup is broken: the browser tests fail (never skip) without it.

Playwright's sync API marks its event loop as the thread's running loop between calls (the loop
runs in a greenlet of the main thread, playwright/_impl/_greenlets.py wait_for_future). Kept
alive across the session, that would make every later ``asyncio.run()`` of a non-browser test
fail ("cannot be called from a running event loop"); so the loop is marked running only while a
test holds a context (``_resume``) and unmarked when it lets go (``_park``)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-gl=swiftshader", "--enable-unsafe-swiftshader"]

_state: dict = {"manager": None, "playwright": None, "browser": None}


def fail_without_chromium() -> None:
    """The browser is part of the test setup (scripts/setup.sh --test installs it): a missing one
    fails the browser tests instead of skipping them, so they cannot pass with nothing run."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail("needs /usr/bin/chromium (scripts/setup.sh --test installs it)")


def _resume() -> None:
    manager = _state["manager"]
    if manager is not None:
        asyncio._set_running_loop(manager._loop)


def _park() -> None:
    asyncio._set_running_loop(None)


def shared_browser():
    """The session's Chromium, launched on first use (and again should it have died)."""
    import playwright.sync_api as playwright  # a declared dev dependency: missing = broken setup

    fail_without_chromium()
    if _state["manager"] is None:
        _park()  # a clean thread: sync_playwright() refuses to start inside a running loop
        manager = playwright.sync_playwright()
        _state["playwright"] = manager.start()
        _state["manager"] = manager
    _resume()
    browser = _state["browser"]
    if browser is None or not browser.is_connected():
        _state["browser"] = browser = _state["playwright"].chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    return browser


@contextmanager
def browser_context(**options) -> Iterator:
    """A fresh BrowserContext of the session's Chromium (``options``: viewport, locale,
    has_touch, ...), closed afterwards with every page in it."""
    try:
        context = shared_browser().new_context(**options)
        try:
            yield context
        finally:
            _resume()
            context.close()
    finally:
        _park()


@contextmanager
def browser_session() -> Iterator:
    """The session's Chromium for a test that opens several contexts itself (``browser.new_page``
    makes a page with a context of its own, closed with the page); every context the test
    opened is closed afterwards."""
    try:
        browser = shared_browser()
        before = set(browser.contexts)
        try:
            yield browser
        finally:
            _resume()
            for context in [c for c in browser.contexts if c not in before]:
                context.close()
    finally:
        _park()


def stop() -> None:
    """Close the session's Chromium and the Playwright driver (at the end of the session)."""
    manager = _state["manager"]
    if manager is None:
        return
    try:
        _resume()
        if _state["browser"] is not None and _state["browser"].is_connected():
            _state["browser"].close()
        manager.__exit__(None, None, None)
    finally:
        _state.update(manager=None, playwright=None, browser=None)
        _park()
