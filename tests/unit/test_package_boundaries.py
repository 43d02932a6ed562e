"""The shipped package (include/notify, deployed as dags/include/notify on MWAA) stands on its own.

Importing it must not pull in the developer tooling (notify_tools: simulator, data generator),
matplotlib or Airflow: the tooling is not shipped, and only ``orchestration`` (the Airflow
adapter the DAG files import) may need Airflow. Checked in a fresh interpreter, because this test
session has long since imported all of them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "include"
AIRFLOW_ADAPTER = "include.notify.orchestration"
FORBIDDEN = ("notify_tools", "notify_tools.simulator", "notify_tools.datagen", "matplotlib", "airflow")

_PROBE = f"""
import importlib, json, pkgutil, sys

import include.notify as package

imported = ["include.notify"]
for info in pkgutil.walk_packages(package.__path__, "include.notify."):
    if info.name != {AIRFLOW_ADAPTER!r}:
        importlib.import_module(info.name)
        imported.append(info.name)
forbidden = {FORBIDDEN!r}
print(json.dumps({{
    "package_file": package.__file__,
    "imported": imported,
    "loaded": sorted(name for name in forbidden if name in sys.modules),
}}))
"""


def test_importing_the_shipped_package_pulls_in_no_tooling_matplotlib_or_airflow() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    # The probe imported this checkout's package, and every module of it, not an installed copy.
    assert Path(result["package_file"]).resolve().is_relative_to(SHIPPED)
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in (SHIPPED / "notify").rglob("*.py")
    }
    assert set(result["imported"]) == modules - {AIRFLOW_ADAPTER}
    assert result["loaded"] == [], f"importing include.notify loaded {result['loaded']}"


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
    return names


def test_no_shipped_module_imports_the_tooling_even_lazily() -> None:
    """Covers imports inside functions too, which the fresh-interpreter check cannot see, and the
    Spark jobs, which ship to EMR Serverless with include/ alone (``make emr-bundle``)."""
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted([*SHIPPED.rglob("*.py"), *(REPO / "spark_jobs").rglob("*.py")])
        for line, name in _imported_names(ast.parse(path.read_text(), filename=str(path)))
        if name == "notify_tools" or name.startswith("notify_tools.")
    ]
    assert offenders == []
