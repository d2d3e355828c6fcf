"""Heavy libraries imported on first use, so the light commands never pay for them.

`featsync get` reads a few Redis values and decodes them with `struct`; the modules it shares
with push (`online.layout`, `online.validity`) also hold push's vectorized encoding, which needs
numpy and pyarrow (about 0.2 s of CPU to import, a third of the whole command). Those modules
bind the names with `lazy("numpy")` instead of `import numpy`: the import happens at the first
attribute access, then every access is one more `getattr`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module until its first attribute is read, then imports it and forwards to it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (imported)'}>"


def lazy(name: str) -> Any:
    """A module imported on first use (typed Any: annotations name the real module's types)."""
    return LazyModule(name)
