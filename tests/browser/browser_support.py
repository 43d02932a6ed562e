"""What the browser tests share: Debian's Chromium, an Airflow login with SimpleAuthManager users,
and a browser profile that records every request leaving the machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from include.notify.config import REPO_ROOT

CHROMIUM = Path(os.environ.get("NOTIFY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ABSENT = f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install chromium) to run it"
# As root in a closed network: no sandbox, and no background calls to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
ARTIFACTS = REPO_ROOT / ".notify" / "artifacts" / "browser"
PASSWORDS = {"admin": "admin-pw-1", "viewer": "viewer-pw-2"}


def simple_auth_env(home: Path, port: int) -> dict[str, str]:
    """Airflow's SimpleAuthManager with an Admin and a Viewer whose passwords the tests know."""
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-secret",
    }


def wait_http(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"airflow api-server did not answer on {url} within {seconds:.0f}s:\n{log.read_text()[-3000:]}")


def new_context(browser, base: str):
    """A fresh browser profile that records every request leaving for somewhere other than ``base``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.outside = []
    context.on(
        "request",
        lambda r: None if r.url.startswith((base, "data:", "blob:", "about:")) else context.outside.append(r.url),
    )
    return context


def login(page, base: str, user: str, next_path: str) -> None:
    page.goto(f"{base}{next_path}")
    # No session: Airflow (or the Notify plugin) hands the visitor to Airflow's own login page.
    page.wait_for_url(re.compile(r".*/auth/login.*"), timeout=30_000)
    page.locator("input[name=username], input#username").first.fill(user)
    page.locator("input[type=password]").first.fill(PASSWORDS[user])
    page.locator("button[type=submit], button:has-text('Sign in'), button:has-text('Login')").first.click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, tmp_path / name)
    return shot
