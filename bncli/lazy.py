"""Heavy libraries as module handles that import on first use, so `bncli --help` stays instant.

    if TYPE_CHECKING:
        import torch
    else:
        torch = lazy("torch")

Type checkers read the real import; at run time the first attribute read (`torch.zeros`)
imports the module, and from then on every read is a plain attribute lookup. A module whose
declarations the command line needs (a study's fields, the component registries) imports torch,
numpy and pandas this way; `tests/test_cli.py` checks that no `--help` imports them.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _Lazy(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:  # only for names not copied in yet
        module = importlib.import_module(self.__name__)
        self.__dict__.update(vars(module))
        return getattr(module, attr)


def lazy(name: str) -> Any:
    """A stand-in for module `name` that imports it when one of its attributes is first read."""
    return _Lazy(name)
