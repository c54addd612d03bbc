"""A headless Chromium driven over the DevTools protocol, with the network blocked.

The browser talks CDP over a pipe (``--remote-debugging-pipe``: commands on fd 3, events
on fd 4, each message NUL-terminated JSON), so no port is opened and nothing beyond the
standard library is needed. Every network path is shut: a dead proxy for every host but
loopback, every host name resolving to nothing, and no background traffic of Chromium's own.
What the page tried anyway is recorded (``Network.requestWillBeSent``), together with
console errors, uncaught exceptions and browser log errors (CSP violations, failed loads).

>>> with Browser() as b:                                   # doctest: +SKIP
...     page = b.open(Path("report.html"), ready="document.querySelector('.cv-view canvas')")
...     page.errors, page.requests, page.evaluate("document.title")
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Flags that keep Chromium from reaching any network, and from doing anything in the background.
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
    installed here.
    """
    path = find_chromium()
    if path or os.environ.get("HEADSCOPE_NO_CHROMIUM_INSTALL") == "1":
        return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=1200)
    return find_chromium()


WHY_NO_CHROMIUM = ("no Chromium here and it cannot be installed (needs root and apt-get): "
                   "run `apt-get install -y chromium` or set HEADSCOPE_CHROMIUM=/path/to/chrome")


@dataclass
class Page:
    """What one page load left behind."""

    url: str
    session: str
    browser: "Browser"
    console: list[dict] = field(default_factory=list)  # {"level", "text"}
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, its own included

    @property
    def errors(self) -> list[str]:
        self.browser._file_events(self)  # events that arrived during later commands
        return [e["text"] for e in self.console if e["level"] == "error"]

    @property
    def network_requests(self) -> list[str]:
        """Requests that would leave the machine: anything but the page file and inline data."""
        self.browser._file_events(self)
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:", "blob:"))]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        r = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r} threw: {r['exceptionDetails'].get('text')} "
                               f"{r['result'].get('description', '')}")
        return r["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280, max_height: int = 16000) -> Path:
        """A PNG of the whole page: the viewport is made as tall as the page, given a moment to
        settle (responsive charts redraw on resize), then captured."""
        import base64

        height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
        self.browser.send("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, self.session)
        self.browser.wait_idle(self, 1.5)
        r = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)
        path = Path(path)
        path.write_bytes(base64.b64decode(r["data"]))
        return path


class Browser:
    """One headless Chromium, offline; open pages with :meth:`open`."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise RuntimeError(WHY_NO_CHROMIUM)
        self.timeout = timeout
        self._id = 0
        self._buf = b""
        self._events: list[dict] = []

    # --- process ---------------------------------------------------------------------------
    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="headscope-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        args = [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}", *OFFLINE_FLAGS, "about:blank"]

        # The child reads CDP commands on fd 3 and writes replies/events on fd 4. Both ends are
        # first moved to fds >= 10 (close-on-exec) so that putting one on 3 cannot clobber the
        # other; the copies on 3 and 4 are inheritable, and close_fds=False keeps them open
        # (every other fd Python opens is close-on-exec).
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w))
        os.close(to_child_r), os.close(from_child_w)

        def onto_3_and_4():
            os.dup2(r, 3)
            os.dup2(w, 4)

        # stderr to a file, never a pipe nobody drains (Chromium would block once it filled)
        self._stderr = open(os.path.join(self._profile, "stderr.log"), "wb")
        self._proc = subprocess.Popen(args, preexec_fn=onto_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=self._stderr)
        os.close(r)
        os.close(w)
        self.send("Browser.getVersion")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- protocol --------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    log = Path(self._profile) / "stderr.log"
                    err = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"Chromium closed the DevTools pipe. {err}")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._events.append(m)

    def _pump(self, page: Page, seconds: float) -> None:
        """Read events for ``seconds`` and file those of ``page``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._events.append(self._read_message(deadline))
            except TimeoutError:
                break
        self._file_events(page)

    def _file_events(self, page: Page) -> None:
        for m in self._events:
            if m.get("sessionId") != page.session:
                continue
            p, method = m.get("params", {}), m.get("method")
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                level = {"error": "error", "assert": "error", "warning": "warning"}.get(p.get("type"), "info")
                page.console.append({"level": level, "text": text})
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                page.console.append({"level": "error", "text": f"uncaught: {d.get('text')} "
                                                                f"{d.get('exception', {}).get('description', '')}"})
            elif method == "Log.entryAdded":
                e = p.get("entry", {})
                page.console.append({"level": "error" if e.get("level") == "error" else e.get("level", "info"),
                                     "text": f"[{e.get('source')}] {e.get('text')} {e.get('url', '')}".strip()})
            elif method == "Network.requestWillBeSent":
                page.requests.append(p.get("request", {}).get("url", ""))
        self._events = [m for m in self._events if m.get("sessionId") != page.session]

    def wait_idle(self, page: Page, seconds: float) -> None:
        self._pump(page, seconds)

    def open(self, path: Path, ready: str | None = None, timeout: float = 30.0, width: int = 1280,
             height: int = 900) -> Page:
        """Load ``path`` in a fresh tab; wait for the load event and, if given, for ``ready`` to be truthy."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        url = Path(path).resolve().as_uri()
        page = Page(url, session, self)
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", {}, session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + timeout
        loaded = False
        while not loaded and time.monotonic() < deadline:
            self._pump(page, 0.2)
            loaded = page.evaluate("document.readyState") == "complete"
        if not loaded:
            raise TimeoutError(f"{url} did not finish loading in {timeout} s")
        if ready:
            while not page.evaluate(f"!!({ready})"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}: {ready!r} still false after {timeout} s; console: {page.console}")
                self._pump(page, 0.2)
        self._pump(page, 0.5)  # late errors (effects run after the first paint)
        return page
