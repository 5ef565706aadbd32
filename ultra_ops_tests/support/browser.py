"""Headless Chromium for the UI tests: Debian's `chromium`, launched by Playwright for Python;
nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# What a container or CI box needs: no sandbox (root), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
