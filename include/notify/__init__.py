"""Notify: nightly learning, daily planning and minutely dispatch of personalised notifications.

Everything here is importable and testable without Airflow; DAGs, Spark jobs, the CLI and the
tests call these functions so that nothing is written twice.
"""
