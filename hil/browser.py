"""A headless Debian Chromium for the rig: the web view's tests and the bench's viewers.

Selenium drives ``/usr/bin/chromium`` through its own ``/usr/bin/chromedriver`` (the
Debian packages; nothing is downloaded). Run as root, Chromium raises some of its own
threads above normal priority (nice -8), over the node it is meant to watch: the driver
is started through a small script that takes that right (``CAP_SYS_NICE``) away, which
its browser inherits, so it runs as an unprivileged viewer's would, ``nice`` lower still
if asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_ROOT = os.geteuid() == 0


class BrowserMissing(RuntimeError):
    """Chromium or its chromedriver is not installed (``make sysdeps`` installs both)."""


def driver_script(folder: Path, nice: int = 0) -> Path:
    """The chromedriver launcher in ``folder``: without CAP_SYS_NICE when root, at
    ``nice`` below normal."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "chromedriver.sh"
    drop = "setpriv --bounding-set -sys_nice --inh-caps -sys_nice " if _ROOT else ""
    script.write_text(
        f'#!/bin/sh\nexec {drop}nice -n {int(nice)} {CHROMEDRIVER} "$@"\n', encoding="utf-8"
    )
    script.chmod(0o755)
    return script


def open_chromium(
    folder: Path,
    *,
    nice: int = 0,
    window: tuple[int, int] = (1280, 1000),
    page_load_timeout_s: float = 30.0,
) -> Any:
    """A headless Chromium (a Selenium WebDriver) whose driver runs in a session of its own;
    quit it when done. Raises ``BrowserMissing``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        raise BrowserMissing(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian chromium)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(arg)
    service = Service(str(driver_script(folder, nice)), popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(page_load_timeout_s)
    return driver
