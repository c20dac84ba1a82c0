"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no browser
download, no websocket library, nothing from the network. Used by the review page's browser test and to make
the README's screenshot (``python -m tests.results.browser PAGE.html SHOT.png``)."""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


class Browser:
    """One page in a headless Chromium; ``events`` keeps every protocol event of the page's session."""

    def __init__(self, binary: str, width: int = 1400, height: int = 2000):
        self._profile = tempfile.mkdtemp(prefix="review-browser-")
        to_child, self._commands = os.pipe()
        self._replies, from_child = os.pipe()
        # The protocol's pipe is the child's fds 3 (commands in) and 4 (replies out).
        self._process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_child} 4>&{from_child}', binary, "--headless=new",
             "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--allow-file-access-from-files", "about:blank"],
            pass_fds=(to_child, from_child), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=None)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._replies, "rb", buffering=0) as replies:
            while chunk := replies.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._inbox.put(json.loads(message))
        self._inbox.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = "page", timeout: float = 30.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._inbox.get(timeout=max(deadline - time.monotonic(), 0.01))
            if reply is None:
                raise RuntimeError("chromium closed the pipe")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        """The first event ``method`` (already seen or coming)."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((event for event in self.events if event.get("method") == method), None)
            if found is not None:
                return found
            reply = self._inbox.get(timeout=max(deadline - time.monotonic(), 0.01))
            if reply is None:
                raise RuntimeError("chromium closed the pipe")
            self.events.append(reply)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path) -> None:
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_for("Page.loadEventFired")
        deadline = time.monotonic() + 20
        while not self.evaluate("[...document.images].every(i => i.complete)") and time.monotonic() < deadline:
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A mouse click at the middle of the first element that ``selector`` finds, as a user's."""
        box = self.evaluate(f"(() => {{const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def hover(self, selector: str) -> None:
        """The mouse moved onto the middle of the first element that ``selector`` finds."""
        box = self.evaluate(f"(() => {{const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];})()")
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]})

    def press(self, key: str) -> None:
        """A key pressed and released, as a user's (``j``, ``ArrowDown``, ``Enter``)."""
        codes = {"ArrowDown": 40, "ArrowUp": 38, "Enter": 13, "Escape": 27}
        code = codes[key] if key in codes else ord(key.upper())
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "windowsVirtualKeyCode": code,
                                                 "code": key if key in codes else f"Key{key.upper()}"})

    def type(self, text: str) -> None:
        self.send("Input.insertText", {"text": text})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", session=None, timeout=5)
        except (RuntimeError, queue.Empty, OSError):
            self._process.kill()  # it did not close by itself
        self._process.wait(timeout=10)
        os.close(self._commands)
        shutil.rmtree(self._profile, ignore_errors=True)


if __name__ == "__main__":
    page, shot = Path(sys.argv[1]), Path(sys.argv[2])
    browser = Browser(find_chromium() or sys.exit("no chromium"), height=int(sys.argv[3]) if len(sys.argv) > 3 else 900)
    try:
        browser.open(page)
        shot.write_bytes(browser.screenshot())
    finally:
        browser.close()
