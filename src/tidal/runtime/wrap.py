"""Making ``step()`` and friends take effect once per real step, on the last micro-batch.

The user's optimizers, LR schedulers and GradScaler are returned by ``prepare`` as the same
objects, with a few bound methods replaced on the instance (the originals are kept and put
back by :meth:`Patches.undo`). While a non-final micro-batch is running, the replaced
methods do nothing; otherwise, and outside the loader loop, they call the original.
``zero_grad`` is left alone: it only ever clears the current logical rank's gradients.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

__all__ = ["OPTIMIZER_METHODS", "SCALER_METHODS", "SCHEDULER_METHODS", "Patches"]

OPTIMIZER_METHODS = ("step",)
SCHEDULER_METHODS = ("step",)
SCALER_METHODS = ("unscale_", "step", "update")

_MARK = "_tidal_original"


_MISSING = object()


class Patches:
    """Instance-method replacements that skip calls on non-final micro-batches."""

    def __init__(self, skip: Callable[[], bool]) -> None:
        self._skip = skip
        self._done: list[tuple[object, str, Any]] = []

    def patch(self, obj: object, names: tuple[str, ...]) -> None:
        for name in names:
            current = getattr(obj, name)
            original = getattr(current, _MARK, current)  # never wrap a wrapper
            self._done.append((obj, name, vars(obj).get(name, _MISSING)))
            setattr(obj, name, self._wrap(obj, original))

    def _wrap(self, obj: object, original: Callable[..., Any]) -> Callable[..., Any]:
        skip = self._skip

        def wrapper(_self: object, *args: Any, **kwargs: Any) -> Any:
            if skip():
                return None
            return original(*args, **kwargs)

        functools.update_wrapper(wrapper, original)
        setattr(wrapper, _MARK, original)
        # a bound method, like the one it replaces (LR schedulers unwrap ``step.__func__``)
        return types.MethodType(wrapper, obj)

    def undo(self) -> None:
        """Put every replaced method back as it was."""
        for obj, name, previous in reversed(self._done):
            if previous is _MISSING:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, previous)
        self._done.clear()
