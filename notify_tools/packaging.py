"""What goes where: the MWAA requirements and bundle, and the EMR Serverless bundle.

Everything is derived from ``pyproject.toml``'s one declaration (``dependencies`` + extras):

- ``requirements-mwaa.txt``: the runtime and ``ml`` sets, MWAA's ``--constraint`` line for the
  newest Airflow it runs (no Airflow core pins: MWAA provides Airflow and applies that file), and
  torch from the PyTorch CPU index (PyPI's torch is the multi-GB CUDA build).
- ``make mwaa-bundle`` -> ``.notify/mwaa/``: ``dags/`` (the DAG files with ``include/notify`` and
  ``spark_jobs`` beside them, as MWAA has no include folder), ``plugins.zip``,
  ``requirements.txt`` and ``startup.sh``; ``aws s3 sync`` it to the environment's bucket.
- ``make emr-bundle`` -> ``.notify/emr/``: the job files, ``include.zip`` and ``notify-deps.tar.gz``
  (the ``spark`` set minus pyspark, for EMR's Python: manylinux wheels, unpacked as ./deps).

Not shipped to MWAA: this package (``notify_tools``), tests, benchmarks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from include.notify.config import REPO_ROOT

# The newest Airflow Amazon MWAA runs, and its Python.
MWAA_AIRFLOW_VERSION = "3.3.1"
MWAA_PYTHON_VERSION = "3.12"
MWAA_CONSTRAINTS = (
    f"https://raw.githubusercontent.com/apache/airflow/constraints-{MWAA_AIRFLOW_VERSION}/"
    f"constraints-{MWAA_PYTHON_VERSION}.txt"
)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MWAA_EXTRAS = ("ml",)
# Packages that are Airflow itself (MWAA provides them) or only for development and local emulation.
NOT_FOR_MWAA = re.compile(r"^(apache-airflow|apache-airflow-core|apache-airflow-task-sdk)$")
# The jobs' Python on EMR Serverless: numpy 2.4 needs 3.11+, so the application runs a custom image with
# Python 3.11 (release 7.x defaults to 3.9). The archive's wheels are built for this version.
EMR_PYTHON_VERSION = "3.11"


def declaration(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, list[str]]:
    """``{"runtime": [...], "<extra>": [...]}`` as declared in pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {"runtime": list(project["dependencies"]), **project.get("optional-dependencies", {})}


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``Foo_Bar[x]>=1`` -> ``foo-bar``)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def mwaa_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The text of MWAA's requirements.txt (runtime + ml), derived from pyproject.toml."""
    declared = declaration(pyproject)
    lines = [
        "# Generated from pyproject.toml by `make mwaa-requirements` (notify_tools/packaging.py): do not edit.",
        f"# Amazon MWAA, Airflow {MWAA_AIRFLOW_VERSION} on Python {MWAA_PYTHON_VERSION}: MWAA provides Airflow",
        "# and installs the providers' versions from its constraints file; nothing here pins Airflow core.",
        f"--constraint {MWAA_CONSTRAINTS}",
        "# torch's CPU build: PyPI's default torch wheel is the multi-GB CUDA build.",
        f"--extra-index-url {TORCH_CPU_INDEX}",
    ]
    for group in ("runtime", *MWAA_EXTRAS):
        lines.append(f"# {group}")
        lines += [r for r in declared[group] if not NOT_FOR_MWAA.match(requirement_name(r))]
    return "\n".join(lines) + "\n"


STARTUP_SH = """#!/bin/sh
# MWAA startup script (runs on every scheduler, worker and web server before Airflow starts).
# MWAA exposes the environment's configuration options `notify.<name>` as AIRFLOW__NOTIFY__<NAME>;
# Notify reads NOTIFY_<NAME>. Copy them across (only names Notify knows; alerts and retention stay
# Airflow options).
for var in $(env | sed -n 's/^AIRFLOW__NOTIFY__\\([A-Z0-9_]*\\)=.*/\\1/p'); do
  case "$var" in
    ALERTS_SNS_TOPIC_ARN|METADATA_RETENTION_DAYS) ;;
    *) eval "export NOTIFY_${var}=\\"\\$AIRFLOW__NOTIFY__${var}\\"" ;;
  esac
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export NUMBA_CACHE_DIR=/tmp/numba
"""


def _copy_code(destination: Path, parts: tuple[str, ...]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for part in parts:
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=ignore)
        else:
            (destination / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / part)


def build_mwaa_bundle(out: Path) -> Path:
    """Write ``out/{dags/, plugins.zip, requirements.txt, startup.sh}``: the S3 layout of an MWAA environment."""
    shutil.rmtree(out, ignore_errors=True)
    dags = out / "dags"
    dags.mkdir(parents=True)
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags / dag_file.name)
    shutil.copy2(REPO_ROOT / "dags" / ".airflowignore", dags / ".airflowignore")
    _copy_code(dags, ("include/__init__.py", "include/notify", "spark_jobs"))
    with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((REPO_ROOT / "plugins").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(REPO_ROOT / "plugins"))
    (out / "requirements.txt").write_text(mwaa_requirements())
    (out / "startup.sh").write_text(STARTUP_SH)
    (out / "startup.sh").chmod(0o755)
    return out


def emr_requirements() -> list[str]:
    """What the Spark jobs import on EMR besides pyspark (EMR provides Spark itself)."""
    declared = declaration()
    wanted = [r for r in declared["spark"] if requirement_name(r) != "pyspark"]
    return [*wanted, *[r for r in declared["runtime"] if requirement_name(r) in {"pandas", "numpy", "pyarrow"}]]


def build_emr_bundle(out: Path, with_deps: bool = True) -> Path:
    """Write ``out/{spark_jobs/, include.zip, notify-deps.tar.gz}``: what ``NOTIFY_EMR_CODE_URI`` must hold.

    The dependency archive holds manylinux wheels installed for EMR's Python
    (``EMR_PYTHON_VERSION``) with ``pip install --target``; Spark unpacks it as ``./deps`` on
    the driver and each executor (``spark.archives``) and puts it on ``PYTHONPATH``.
    """
    from include.notify.spark import EMR_DEPS_ARCHIVE

    shutil.rmtree(out, ignore_errors=True)
    (out / "spark_jobs").mkdir(parents=True)
    for job in sorted((REPO_ROOT / "spark_jobs").glob("*.py")):
        shutil.copy2(job, out / "spark_jobs" / job.name)
    with zipfile.ZipFile(out / "include.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((REPO_ROOT / "include").rglob("*.py")):
            archive.write(path, path.relative_to(REPO_ROOT))
    if with_deps:
        deps = out / "deps"
        subprocess.run(  # noqa: S603 - fixed pip command
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps), "--only-binary=:all:",
             "--platform", "manylinux2014_x86_64", "--python-version", EMR_PYTHON_VERSION, *emr_requirements()],
            check=True,
        )  # fmt: skip
        with tarfile.open(out / EMR_DEPS_ARCHIVE, "w:gz") as archive:
            for path in sorted(deps.iterdir()):
                archive.add(path, arcname=path.name)
        shutil.rmtree(deps)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["mwaa-requirements", "mwaa-bundle", "emr-bundle"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "mwaa-requirements":
        args.out.write_text(mwaa_requirements())
    elif args.what == "mwaa-bundle":
        build_mwaa_bundle(args.out)
    else:
        build_emr_bundle(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
