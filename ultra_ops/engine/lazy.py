"""Client libraries imported when first used, not when the code location loads.

psycopg, httpx and redis cost about 280 ms to import, and loading the code location (a webserver
reload, a sensor's process, every CLI command) uses none of them: only the steps that talk to a
database, an HTTP peer or Redis do.

Not importlib.util.LazyLoader: before Python 3.12 its module is executed by whichever thread first
reads an attribute, and a second thread reading one meanwhile sees the half-executed module
(verify's checks, one thread each, failed with "module 'psycopg' has no attribute 'Error'"). The
stand-in here holds nothing and hands every attribute read to the real module, which
importlib.import_module imports once under the import system's per-module lock: a thread that
arrives during the import waits for it to finish.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands for a top-level module until it is imported, then forwards to it."""

    def __getattr__(self, attr: str) -> Any:
        # Called only for attributes the stand-in lacks, i.e. all but its name and docstring.
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_module(name: str) -> ModuleType:
    """The top-level module `name`, imported on its first attribute access (from any thread)."""
    loaded = sys.modules.get(name)
    if loaded is not None and not getattr(getattr(loaded, "__spec__", None), "_initializing", False):
        return loaded
    # Fail now, not at first use, when the module is not installed at all.
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"no module named {name!r}")
    return _LazyModule(name)
