"""Code shipped beside the DAGs (``dags/include/`` on MWAA), importable as ``include.notify``."""
