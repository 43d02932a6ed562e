"""Notify: nightly learning, daily planning and minutely dispatch of personalised notifications.

This package is what ships beside the DAGs (``dags/include/notify/`` on MWAA). Every module in it
except ``orchestration`` (the Airflow adapter: DAG defaults, Assets, run dates) imports and is
testable without Airflow; Airflow-only helpers elsewhere (``config.config_from_airflow``, the EMR
Serverless runner in ``spark``) import Airflow inside the function. DAGs, Spark jobs, the CLI and
the tests call these functions so that nothing is written twice. Developer and benchmark tooling
(simulator, data generator, demo, local services) lives in ``notify_tools``, which is not shipped
and which nothing here imports (``tests/unit/test_package_boundaries.py``).
"""
