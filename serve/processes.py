"""Worker processes: they end with the process that started them and give back the memory they free."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time

import pyarrow as pa

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


def give_back_memory() -> None:
    """Return free memory to the system: Arrow's pool and the C heap (glibc's ``malloc_trim``).

    A process that builds and drops frames of hundreds of MB part after part keeps them as free
    memory: Arrow's allocator holds what it freed, and glibc raises its threshold for ``mmap``
    after large frees, so later arrays come from a heap that only grows (Dask's workers trim it
    the same way).
    """
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None; looked up once per process (``find_library`` runs ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    return None if name is None else getattr(ctypes.CDLL(name), "malloc_trim", None)
