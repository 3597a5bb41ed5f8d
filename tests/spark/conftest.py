"""One SparkSession for every Spark test of the session: local[2], no UI, few shuffle partitions.

Starting Spark takes 6-40 s here, its first job ~10 s: tests share the session instead.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from serve.spark_scoring import spark_session

    session = spark_session("local[2]", app_name="misdeclare-tests", shuffle_partitions=4)
    yield session
    session.stop()
