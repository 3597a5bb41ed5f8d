"""pandera's pandas API, imported without pandas-on-Spark.

When PySpark is installed (the ``spark`` extra), ``import pandera`` also imports ``pyspark.pandas``
for its pandas-on-Spark support: every command then pays for the PySpark import, prints PySpark's
warning that it does not fully support pandas 3, and runs with pandas' Series and DataFrame patched
by PySpark. The product validates pandas frames only (the Spark engine too, one batch at a time), so
pandera is imported while ``pyspark`` and ``pyspark.pandas`` are marked absent in ``sys.modules``,
which pandera treats as PySpark not being installed. The marks are removed right after: PySpark
itself stays importable (the Spark engine imports it later).
"""

from __future__ import annotations

import sys
from types import ModuleType

_PANDAS_ON_SPARK = ("pyspark", "pyspark.pandas")


def import_pandera_pandas() -> ModuleType:
    """``pandera.pandas``, imported without importing ``pyspark.pandas``."""
    marked = [name for name in _PANDAS_ON_SPARK if name not in sys.modules]
    if "pyspark.pandas" not in marked:  # already imported by someone else: nothing to spare
        marked = []
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]  # None marks a module absent (importlib docs)
    try:
        import pandera.pandas
    finally:
        for name in marked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return pandera.pandas
