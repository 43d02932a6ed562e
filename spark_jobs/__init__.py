"""PySpark entry points, one file per job (``main(argv)``), runnable by spark-submit and EMR Serverless."""
