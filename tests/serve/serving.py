"""Helpers of the serve tests: a real ``python -m threeline.serve`` process, and headless
Chromium through Selenium (skipped without chromium and chromedriver; failed when CI=true)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def start_server(run_folder: Path, log: Path, *args: str, timeout: float = 300,
                 while_loading: Callable[[httpx.Client, httpx.Response], None] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """Start the server on a free port and wait until ``/health`` says ok: (process, url).
    ``while_loading(client, health)`` runs at each poll that finds the model still loading.
    The caller terminates the process."""
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "threeline.serve", str(run_folder), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stdout.readline()  # threeline serve: NAME at http://127.0.0.1:PORT/ ...
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"the server did not start: {line!r}\n{log.read_text()}"
        url, deadline, status = found.group(0), time.monotonic() + timeout, "unreachable"
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline and status in ("unreachable", "loading"):
                with contextlib.suppress(httpx.TransportError):
                    health = client.get("/health")
                    status = health.json()["status"]
                    if status == "loading" and while_loading is not None:
                        while_loading(client, health)
                time.sleep(0.05)
        assert status == "ok", f"{status}\n{log.read_text()}"
    except BaseException:
        process.terminate()
        process.wait(30)
        raise
    return process, url


def browser():
    """Headless Chromium through Selenium; skipped (failed under CI=true) when missing."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = ("chromium and chromedriver are not installed: run scripts/install_browser.sh "
                   "(Debian: apt-get install chromium chromium-driver).")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(chromedriver))
