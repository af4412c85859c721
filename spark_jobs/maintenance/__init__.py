"""The lake's table maintenance job (``main.py``): compaction, snapshot expiry and orphan files."""
