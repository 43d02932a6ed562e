"""Where Chromium is absent, the browser tests skip with one clear reason instead of failing or
passing silently; nothing else in tests/browser runs (no Airflow, no dynalite is started)."""

from __future__ import annotations

import os
import subprocess
import sys

from include.notify.config import REPO_ROOT


def test_browser_tests_skip_naming_the_missing_chromium() -> None:
    missing = "/nonexistent/chromium"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests/browser"],
        cwd=REPO_ROOT,
        env={**os.environ, "NOTIFY_CHROMIUM": missing},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for outcome in ("passed", "failed", "error"):
        assert outcome not in output.lower(), output
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert skipped, output
    for line in skipped:
        assert f"{missing} is absent: install Debian's chromium package" in line, output
    assert "4 skipped" in output, output
