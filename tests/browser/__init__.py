"""Browser tests of the dashboard (Playwright driving Debian's chromium)."""

import os
import tempfile
from pathlib import Path


def screenshots_dir() -> Path:
    """Where the browser tests save their screenshots: a temporary folder, so a test run
    leaves the clone as it was; `SEMAPHORE_SCREENSHOTS_DIR=docs/screenshots` refreshes the
    README's."""
    chosen = os.environ.get("SEMAPHORE_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else Path(tempfile.gettempdir()) / "semaphore-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
