"""What every Spark job shares: the contract with the Airflow side (printed marks, job-document
encoding, labels, identifiers), errors, database secrets, the entry point every ``main.py`` calls,
the session runner, the lake's catalog and registry items, and the commit lock."""
