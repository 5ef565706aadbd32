"""Client libraries imported when first used, not when the code location loads.

psycopg, httpx and redis cost about 280 ms to import, and loading the code location (a webserver
reload, a sensor's process, every CLI command) uses none of them: only the steps that talk to a
database, an HTTP peer or Redis do.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The top-level module `name`, executed on its first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
