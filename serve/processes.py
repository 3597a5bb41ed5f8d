"""Worker processes that end with the process that started them."""

from __future__ import annotations

import os
import threading
import time

# How often a worker looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent: int) -> None:
    """End this process when ``parent``, the process that started it, is gone.

    A process killed outright (``SIGKILL``, out of memory, a supervisor's health check) cannot stop
    its workers: they would wait for tasks forever, each holding a model and its share of memory.
    Watched from a daemon thread: the worker is re-parented when its parent dies.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
