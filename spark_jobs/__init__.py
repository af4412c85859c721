"""Spark jobs of spotlake, shipped to the clusters as a zip in ``pyFiles``.

The jobs run unchanged on Amazon EMR 7.x (Spark 3.5, Python 3.9+) and on the
local stack; they import nothing from Airflow or from the ``spotlake`` core
library. ``extract.py`` is the entry script of the window extraction.
"""
