"""The ``misdeclare`` command line as a Python file, for ``spark-submit`` (which runs ``.py`` files).

``spark-submit --master yarn serve/spark_submit.py score IN --out OUT --engine spark ...``
"""

from serve.cli import app

if __name__ == "__main__":
    app()
