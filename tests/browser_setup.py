"""Make sure the browser tests have a Chromium: one on PATH, else Playwright's own build.

Run by ``make test`` before pytest. It never fails the run by itself: if no browser can be had,
the browser tests fail with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

if __name__ == "__main__":
    if any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        sys.exit(0)
    print("No chromium on PATH: installing Playwright's Chromium.", flush=True)
    result = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"])
    if result.returncode != 0:
        print("Could not install Playwright's Chromium; the browser tests will fail.")
