"""The extraction job (``main.py``): a window, the initial snapshot or a reconciliation of one MySQL
table into its Iceberg tables."""
