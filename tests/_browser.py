"""Headless Chromium for the page tests, driven by Playwright, with the network shut.

Playwright drives the system's Chromium (Debian's ``chromium``, through ``executable_path``;
Playwright's own browser download is never used). Two locks keep a page offline:

- every request goes through ``page.route("**/*")``: the page's own ``file:`` URL is let
  through, anything else is recorded in :attr:`OfflinePage.blocked` and aborted;
- Chromium's own traffic is off (:data:`OFFLINE_FLAGS`: a dead proxy for every host but
  loopback, every host name resolving to nothing, no background networking, updates or sync),
  so nothing the route cannot see (the browser's own services) leaves either.

Console errors, uncaught exceptions and browser-log errors (CSP violations, failed loads; Playwright
reports Chromium's log entries as console messages) land in :attr:`OfflinePage.errors`.

>>> with OfflineBrowser(ensure_chromium()) as b:           # doctest: +SKIP
...     page = b.open(Path("report.html"), ready="document.querySelector('.cv-view canvas')")
...     page.errors, page.blocked, page.evaluate("document.title")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Flags that keep Chromium from reaching any network, and from doing anything in the background.
#: Playwright passes several of these itself; they are repeated so the guarantee does not rest on
#: Playwright's defaults.
OFFLINE_FLAGS = (
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--no-pings",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)

WHY_NO_CHROMIUM = (
    "no Chromium here and it cannot be installed (needs root and apt-get): "
    "run `apt-get install -y chromium` or set HEADSCOPE_CHROMIUM=/path/to/chrome"
)
WHY_NO_PLAYWRIGHT = (
    "Playwright for Python is not installed: `pip install -e .[test]` "
    "(or `pip install playwright`; its browser download is not needed)"
)


def find_chromium() -> str | None:
    env = os.environ.get("HEADSCOPE_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str | None:
    """The Chromium executable, installing Debian's ``chromium`` when absent and we are root.

    Returns None (the caller skips with :data:`WHY_NO_CHROMIUM`) when it is absent and cannot be
    installed here. ``HEADSCOPE_NO_CHROMIUM_INSTALL=1`` forbids the install.
    """
    path = find_chromium()
    if path or os.environ.get("HEADSCOPE_NO_CHROMIUM_INSTALL") == "1":
        return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=1200)
    return find_chromium()


@dataclass
class OfflinePage:
    """One page load and what it left behind; ``page`` is the Playwright page."""

    page: object  # playwright.sync_api.Page
    url: str
    console: list[dict] = field(default_factory=list)  # {"level", "text"}, uncaught exceptions as errors
    requests: list[str] = field(default_factory=list)  # every URL routed, the page's own first
    blocked: list[str] = field(default_factory=list)  # those aborted: everything but the page's own file

    @property
    def errors(self) -> list[str]:
        return [e["text"] for e in self.console if e["level"] == "error"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        return self.page.evaluate(expression)

    def wait(self, seconds: float) -> None:
        """Let the page run for ``seconds`` (its events keep being recorded meanwhile)."""
        self.page.wait_for_timeout(seconds * 1000)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not just the viewport)."""
        path = Path(path)
        self.page.screenshot(path=str(path), full_page=True)
        return path


class OfflineBrowser:
    """One headless Chromium, offline; open pages with :meth:`open`, each in its own context."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise RuntimeError(WHY_NO_CHROMIUM)
        self.timeout = timeout

    def __enter__(self) -> OfflineBrowser:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=self.executable, headless=True, args=list(OFFLINE_FLAGS), timeout=self.timeout * 1000
            )
        except Exception:
            self._pw.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._browser.close()
        finally:
            self._pw.stop()

    def open(
        self, path: Path, ready: str | None = None, timeout: float = 30.0, width: int = 1280, height: int = 900
    ) -> OfflinePage:
        """Load ``path`` in a fresh context; wait for the load event and, if given, for ``ready``
        (a JavaScript expression) to be truthy, then half a second more for late errors."""
        # service workers would fetch outside page.route's sight; a file: page cannot register
        # one anyway, this makes it certain
        context = self._browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=1, service_workers="block"
        )
        page = context.new_page()
        url = Path(path).resolve().as_uri()
        log = OfflinePage(page, url)

        def on_console(msg):
            level = {"error": "error", "assert": "error", "warning": "warning"}.get(msg.type, "info")
            where = msg.location.get("url", "") if msg.location else ""
            log.console.append({"level": level, "text": f"{msg.text} {where}".strip()})

        def on_route(route):
            request_url = route.request.url
            log.requests.append(request_url)
            if request_url == url:
                route.continue_()
            else:
                log.blocked.append(request_url)
                route.abort("blockedbyclient")

        page.on("console", on_console)
        page.on(
            "pageerror",
            lambda exc: log.console.append({"level": "error", "text": f"uncaught: {exc.name}: {exc.message}"}),
        )
        page.route("**/*", on_route)
        page.goto(url, wait_until="load", timeout=timeout * 1000)
        # polled from here: page.wait_for_function evaluates its predicate with eval() inside the
        # page, which the report's CSP (no 'unsafe-eval') refuses; page.evaluate is not subject to it
        deadline = time.monotonic() + timeout
        while ready and not page.evaluate(f"!!({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {ready!r} still false after {timeout} s; console: {log.console}")
            page.wait_for_timeout(100)
        log.wait(0.5)  # late errors (effects run after the first paint)
        return log
