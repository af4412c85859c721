"""Spark jobs of spotlake, shipped to the clusters as a zip in ``pyFiles``.

The jobs run unchanged on Amazon EMR 7.x (Spark 3.5, Python 3.9+) and on the
local stack; they import nothing from Airflow or from the ``spotlake`` core
library. Each job is a package with its entry script ``main.py``: ``extraction``,
``maintenance`` and ``clickstream``; ``common`` is what they share.
"""
