"""The workflow as a payload: what a worker in another process (a Ray actor, a sandboxed interpreter) builds it from.

A picklable ``target_factory`` (called in the worker to build the workflow there) or, without one,
the target itself pickled with cloudpickle. A payload that holds the value of a secret environment
variable (an API key inside a client object) is refused: keys reach workers through their
environment (or not at all, in the sandbox), never inside a payload.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

#: Environment variables whose values must never travel inside a pickled payload.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


class TargetNotPicklable(TypeError):
    """The target cannot be sent to worker processes (Ray, the sandbox) and no ``target_factory`` was given."""


class SecretInPayload(ValueError):
    """The pickled target would carry the value of a secret environment variable to the workers."""


# ----- the payload: what the workers build the workflow from ------------------------------------------------
def _pickles(obj: Any) -> Exception | None:
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as exc:  # pickling raises anything: TypeError, PicklingError, AttributeError...
        return exc
    return None


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [(f"[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", value) for i, value in enumerate(obj)]
    items = [(f".{name}", value) for name, value in getattr(obj, "__dict__", {}).items()]
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                items.append((f".{name}", getattr(obj, name)))
    return items


def unpicklable_part(obj: Any, path: str = "target", depth: int = 6) -> tuple[str, Any, Exception] | None:
    """The deepest attribute path under ``obj`` that cloudpickle cannot pickle (None if it all pickles)."""
    error = _pickles(obj)
    if error is None:
        return None
    if depth > 0:
        for name, child in _children(obj):
            found = unpicklable_part(child, path + name, depth - 1)
            if found is not None:
                return found
    return path, obj, error


def _module_attribute(module: str, *path: str) -> Any:
    """The object at ``module.path`` (imported here): how a module-level parameter travels."""
    import importlib

    found: Any = importlib.import_module(module)
    for name in path:
        found = getattr(found, name)
    return found


def _module_level_trainables() -> dict[int, tuple[Any, tuple[str, ...]]]:
    """id -> (object, (module, name[, "code"])) for every `Parameter` and `TracedOp` (and an op's code
    parameter) bound at the top level of an imported module that cloudpickle sends by reference (not
    ``__main__``, not one registered with ``cloudpickle.register_pickle_by_value``)."""
    import sys

    from cloudpickle import cloudpickle as internals

    from opto_core.kernel.parameters import Parameter
    from opto_core.kernel.trace import TracedOp

    # cloudpickle's own rule for functions: modules registered with `register_pickle_by_value` travel by value
    by_value = getattr(internals, "_is_registered_pickle_by_value", lambda module: False)
    found: dict[int, tuple[Any, tuple[str, ...]]] = {}
    for module_name, module in list(sys.modules.items()):
        if module_name in ("__main__", "__mp_main__") or module is None or by_value(module):
            continue
        try:
            namespace = list(vars(module).items())
        except Exception:  # sys.modules may hold any object (a lazy loader, a proxy)
            continue
        for name, value in namespace:
            kind = type(value)  # not isinstance: a proxy's __class__ may run code (and takes 30x longer)
            if issubclass(kind, Parameter):
                found.setdefault(id(value), (value, (module_name, name)))
            elif issubclass(kind, TracedOp):
                found.setdefault(id(value), (value, (module_name, name)))
                code = getattr(value, "code", None)
                if isinstance(code, Parameter):
                    found.setdefault(id(code), (code, (module_name, name, "code")))
    return found


def dumps_target(target: Any) -> bytes:
    """``target`` pickled with cloudpickle, except that a parameter (or op) living at the top level of
    an importable module travels as a reference to it. cloudpickle sends a module's functions by
    reference but objects by value: a workflow in a module (``def run(q): return answer(q)`` reading
    ``PROMPT``) would run, in the worker, the module's own ``answer`` and ``PROMPT``, while the
    values were applied to the copies in the target, so no value would ever reach a run."""
    import io
    import pickle

    import cloudpickle

    shared = _module_level_trainables()

    class _Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj: Any) -> Any:
            entry = shared.get(id(obj))
            if entry is not None and entry[0] is obj:
                return _module_attribute, entry[1]
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(target)
    return buffer.getvalue()


def _check_no_secrets(blob: bytes, what: str, where: str, allowed: frozenset[str] = frozenset()) -> None:
    for name, value in os.environ.items():
        if name not in allowed and SECRET_NAME.search(name) and len(value) >= 8 and value.encode() in blob:
            raise SecretInPayload(
                f"{what} holds the value of the environment variable {name} (an API key inside a client object?); "
                f"{where} will not send secrets inside tasks. Pass target_factory= a module-level function "
                f"that builds the target on the worker, where the client reads {name} from the worker's environment"
            )


def make_payload(
    target: Any,
    factory: Callable[[], Any] | None,
    where: str = "executor='ray'",
    allowed_secrets: frozenset[str] = frozenset(),
) -> tuple[str, bytes]:
    """``("factory", pickled factory)`` or ``("target", pickled target)``, checked before anything is sent.

    ``where`` names the setting in error messages; ``allowed_secrets`` are environment variables
    the user agreed to let into the worker.
    """
    import cloudpickle

    if factory is not None:
        if not callable(factory):
            raise TypeError(f"target_factory must be a function that builds the target, got {type(factory).__name__}")
        try:
            blob = cloudpickle.dumps(factory)
        except Exception as exc:
            raise TargetNotPicklable(
                f"target_factory {factory!r} cannot be pickled ({type(exc).__name__}: {exc}); "
                f"define it at module level, in a module the workers can import"
            ) from exc
        _check_no_secrets(blob, "target_factory", where, allowed_secrets)
        return "factory", blob
    try:
        blob = dumps_target(target)
    except Exception as exc:
        found = unpicklable_part(target)
        part = (
            (
                f"{found[0]} (a {type(found[1]).__module__}.{type(found[1]).__qualname__}) cannot be pickled: "
                f"{type(found[2]).__name__}: {found[2]}"
            )
            if found
            else f"{type(exc).__name__}: {exc}"
        )
        raise TargetNotPicklable(
            f"{where} sends the target to the workers with cloudpickle, and {part}. Pass a target_factory: "
            f"a module-level function, importable on the workers, that builds the target there, e.g. "
            f"optimize(..., {where}, target_factory=build_target) with "
            f"`def build_target(): return ChainTarget(make_chain())`"
        ) from exc
    _check_no_secrets(blob, "the pickled target", where, allowed_secrets)
    return "target", blob
