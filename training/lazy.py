"""Packages whose public names load on first use (PEP 562), so reading a command's options
(``vsearch eval --help``, ``vsearch finetune --help``) imports neither torch nor pymilvus."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``exports`` maps each public name to
    the submodule (relative, e.g. ``".run"``) that defines it, imported when first asked."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__
