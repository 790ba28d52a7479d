"""Headless Chromium for tests of the web page (/ui): Debian's ``chromium`` driven over the
DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in, fd 4 out, one JSON
message per NUL), so nothing listens on a port and no websocket client is needed.

Chromium runs in the network namespace given (the lab's controller namespace, where
the API listens on a lab address), with its own profile directory; `chromium` always
ends it (its process group, by the PID it started) and removes the profile.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BINARY = "chromium"
FLAGS = ("--headless=new", "--no-sandbox", "--remote-debugging-pipe", "--disable-gpu",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--disable-breakpad", "--mute-audio", "--hide-scrollbars",
         "--window-size=1400,1000")


class BrowserError(Exception):
    pass


class Chromium:
    """One headless browser: `open` a page, `evaluate` JavaScript in it, `screenshot`."""

    def __init__(self, ns: str | None = None) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="weft-chromium-"))
        to_browser, self._w = os.pipe()       # we write, chromium reads fd 3
        self._r, from_browser = os.pipe()     # chromium writes fd 4, we read
        argv = [BINARY, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]

        def fds() -> None:      # in the child: the pipe ends at 3 and 4, as chromium wants
            a, b = os.dup(to_browser), os.dup(from_browser)    # never 3 and 4 crossed
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)
        env = {**os.environ, "HOME": str(self.profile), "XDG_CONFIG_HOME": str(self.profile),
               "XDG_CACHE_HOME": str(self.profile)}
        try:
            # close_fds=False: preexec_fn runs before the fds are closed, and only 3 and
            # 4 are inheritable (Python opens everything else close-on-exec)
            self.proc = subprocess.Popen(argv, preexec_fn=fds, close_fds=False,
                                         start_new_session=True, env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except BaseException:
            for fd in (self._w, self._r):
                os.close(fd)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        finally:
            os.close(to_browser)
            os.close(from_browser)
        self._ids = 0
        self._buf = b""

    # -- the protocol --------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._ids += 1
        msg: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline, method)
            if reply.get("id") == self._ids:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise BrowserError(f"{what}: no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError(f"{what}: chromium exited ({self._stderr()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\0", 1)
        return json.loads(line)

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "still running"
        return self.proc.stderr.read().decode(errors="replace")[-800:]

    # -- pages ---------------------------------------------------------------------------
    def open(self, url: str) -> str:
        """A new tab on ``url``; its session id for `evaluate` and `screenshot`."""
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        return self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of ``expression`` in the page (JSON-able values; promises awaited)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, session)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:60]}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait(self, session: str, expression: str, timeout: float = 20, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value.  An exception in the page
        counts as not yet (a tab just opened may still be loading its document)."""
        deadline = time.monotonic() + timeout
        error = ""
        while True:
            try:
                value = self.evaluate(session, expression)
            except BrowserError as exc:
                value, error = None, f" (last: {exc})"
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for "
                                     f"{what or expression}{error}")
            time.sleep(0.2)

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True}, session)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        """Ask it to close, then end its whole process group (the PID started here leads
        it) and remove the profile: nothing of it is left, whatever happened."""
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=5)
                self.proc.wait(timeout=5)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        for fd in (self._w, self._r):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def chromium(ns: str | None = None) -> Iterator[Chromium]:
    browser = Chromium(ns)
    try:
        yield browser
    finally:
        browser.close()


def available() -> bool:
    return shutil.which(BINARY) is not None
