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

    def hide_from_state(self, obj: object) -> None:
        """Keep the replaced methods out of ``state_dict`` and safe from ``load_state_dict``.

        LR schedulers save and restore their whole ``__dict__``, which now holds our bound
        methods; without this they would be pickled into checkpoints and, on load, replace
        the live wrappers with stale copies.
        """
        hidden = {name for o, name, _ in self._done if o is obj} | {"state_dict", "load_state_dict"}
        save, load = obj.state_dict, obj.load_state_dict  # type: ignore[attr-defined]
        self._done.append((obj, "state_dict", vars(obj).get("state_dict", _MISSING)))
        self._done.append((obj, "load_state_dict", vars(obj).get("load_state_dict", _MISSING)))

        def state_dict(_self: object) -> dict[str, Any]:
            return {k: v for k, v in save().items() if k not in hidden}

        def load_state_dict(_self: object, state: dict[str, Any]) -> Any:
            return load({k: v for k, v in state.items() if k not in hidden})

        functools.update_wrapper(state_dict, save)
        functools.update_wrapper(load_state_dict, load)
        obj.state_dict = types.MethodType(state_dict, obj)  # type: ignore[attr-defined]
        obj.load_state_dict = types.MethodType(load_state_dict, obj)  # type: ignore[attr-defined]

    def undo(self) -> None:
        """Put every replaced method back as it was."""
        for obj, name, previous in reversed(self._done):
            if previous is _MISSING:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, previous)
        self._done.clear()
