"""Module-level lazy attributes (PEP 562): a package lists its public names and the submodule
each lives in; the submodule is imported on first use, so light imports stay light."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``names`` maps a name to its module, relative
    to the package (``"predictor"``) or absolute (``"u2seg.infer"``)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name]
        target = module if module.startswith("u2seg") else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
