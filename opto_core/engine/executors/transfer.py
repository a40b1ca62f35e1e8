"""What crosses the wall between the driver and an isolated worker, and in which form.

Towards the worker (trusted: the driver's own data): the step's values and the example, pickled.
Back from the worker (untrusted: code the LLM wrote ran there): never a plain pickle, because
unpickling runs whatever the bytes name, so a worker could take over the driver with one answer.
A result comes back as JSON:

- the graph as its JSON form (``opto-graph/1``);
- the output exactly when it is plain JSON data (str, int, float, bool, None, lists, dicts with
  str keys); else pickled in the worker and read here by `SafeUnpickler`, which builds only data
  types: builtin containers and scalars, exceptions, dataclasses, pydantic models, named tuples,
  enums, subclasses of builtin data types, classes registered with `register_output_type`, and
  classes of the workflow's own framework; and only from modules this process imported already.
  What it refuses comes back as `RemoteOutput` (the type's name and the value's ``repr``), said once;
- an exception as its type name, message and whose failure it was (computed in the worker), rebuilt
  here as an exception of the same name (`RemoteError`; a subclass of the builtin exception when
  the original is one, of `InfrastructureError` when it was infrastructure).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import io
import json
import logging
import pickle
import sys
from typing import Any

from opto_core.engine.executors.common import InfrastructureError, error_kind
from opto_core.engine.provider_errors import ProviderFailure, provider_failure

log = logging.getLogger("opto")

#: Modules and names `SafeUnpickler` builds whatever the workflow: data, no behaviour.
_SAFE_NAMES: dict[str, set[str]] = {
    "builtins": {
        "dict",
        "list",
        "set",
        "frozenset",
        "tuple",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
        "NoneType",
        "object",
    },
    "collections": {"OrderedDict", "defaultdict", "deque", "Counter"},
    "datetime": {"date", "time", "datetime", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "fractions": {"Fraction"},
    "uuid": {"UUID"},
    "copyreg": {"_reconstructor"},
}
_DATA_BASES = (dict, list, tuple, str, bytes, int, float, set, frozenset, enum.Enum)
_REGISTERED: set[type] = set()
_WARNED: set[str] = set()


def register_output_type(cls: type) -> type:
    """Let outputs of type ``cls`` come back from isolated workers as themselves (usable as a decorator)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_output_type takes a class, got {cls!r}")
    _REGISTERED.add(cls)
    return cls


class RemoteOutput(str):
    """An output that could not come back as its own type: its ``repr``, with the type's name in ``type_name``."""

    type_name: str = ""
    reason: str = ""

    def __new__(cls, text: str, type_name: str = "", reason: str = "") -> RemoteOutput:
        made = super().__new__(cls, text)
        made.type_name, made.reason = type_name, reason
        return made


class RemoteError(Exception):
    """An exception raised in an isolated worker, rebuilt here with its type's name and message."""

    remote_type: str = ""
    remote_module: str = ""


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 60:
        return False
    if value is None or type(value) in (str, bool, int):
        return True
    if type(value) is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) is list:
        return all(_is_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_json(v, depth + 1) for k, v in value.items())
    return False


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """An exception as data: its type, message and whose failure it is (decided here, where its causes live),
    with the provider failure behind it (status, Retry-After) when the model provider failed."""
    data: dict[str, Any] = {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": str(exc)[:20000],
        "kind": error_kind(exc),
    }
    failure = provider_failure(exc)
    if failure is not None:
        data["provider"] = dataclasses.asdict(failure)
    return data


def encode_output(value: Any) -> dict[str, Any]:
    """``value`` in the form that travels back: ``{"json"|"pickle"|"repr"|"error": ...}``."""
    if isinstance(value, BaseException):
        return {"error": describe_exception(value)}
    if _is_json(value):
        return {"json": value}
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickling raises anything
        return {"repr": _repr(value), "type": _type_name(value), "why": f"it does not pickle ({type(exc).__name__})"}
    return {"pickle": base64.b64encode(blob).decode("ascii"), "repr": _repr(value), "type": _type_name(value)}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds data types only (see the module's docstring) and never imports a module."""

    def __init__(self, file: Any, frameworks: tuple[str, ...] = ()) -> None:
        super().__init__(file)
        self.frameworks = frameworks

    def find_class(self, module: str, name: str) -> Any:
        if name in _SAFE_NAMES.get(module, ()):
            return getattr(sys.modules[module] if module in sys.modules else __import__(module), name)
        found = sys.modules.get(module)
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name}: its module is not imported in the driver")
        for part in name.split("."):
            found = getattr(found, part, None)
        if isinstance(found, type) and self._allowed(found, module):
            return found
        raise pickle.UnpicklingError(f"{module}.{name} is not a data type")

    def _allowed(self, cls: type, module: str) -> bool:
        if cls in _REGISTERED or issubclass(cls, BaseException) or dataclasses.is_dataclass(cls):
            return True
        if any(f"{base.__module__}.{base.__qualname__}" == "pydantic.main.BaseModel" for base in cls.__mro__):
            return True
        if issubclass(cls, _DATA_BASES) and cls.__module__ not in ("builtins", "os", "posix", "nt"):
            return True
        return bool(self.frameworks) and module.split(".")[0] in self.frameworks


def decode_output(data: dict[str, Any], frameworks: tuple[str, ...] = ()) -> Any:
    """The driver's copy of a worker's output (see `encode_output`)."""
    if "error" in data:
        return rebuild_exception(data["error"])
    if "json" in data:
        return data["json"]
    if "pickle" in data:
        try:
            return SafeUnpickler(io.BytesIO(base64.b64decode(data["pickle"])), frameworks).load()
        except Exception as exc:
            why = str(exc)
    else:
        why = data.get("why", "")
    type_name = str(data.get("type", ""))
    if type_name not in _WARNED:
        _WARNED.add(type_name)
        log.warning(
            "an output of type %s cannot come back from the isolated worker as itself (%s); the feedback "
            "function gets its repr (a RemoteOutput). Register the type with "
            "opto_core.engine.executors.transfer.register_output_type, or use isolation='none'",
            type_name,
            why,
        )
    return RemoteOutput(str(data.get("repr", "")), type_name, why)


_REBUILT: dict[tuple[str, str, str], type] = {}


def rebuild_exception(info: dict[str, Any]) -> BaseException:
    """An exception named like the worker's, carrying its message; infrastructure failures stay infrastructure."""
    name, module, kind = str(info.get("type", "Exception")), str(info.get("module", "")), str(info.get("kind", ""))
    key = (module, name, kind)
    cls: Any = _REBUILT.get(key)
    if cls is None:
        bases: tuple[type, ...] = (RemoteError,)
        builtin = getattr(__import__("builtins"), name, None) if module == "builtins" else None
        if isinstance(builtin, type) and issubclass(builtin, Exception) and not issubclass(builtin, UnicodeError):
            bases = (RemoteError, builtin)
        if kind == "infrastructure":
            bases = (*bases, InfrastructureError)
        try:
            cls = type(
                name.split(".")[-1],
                bases,
                {"__module__": module or __name__, "remote_type": name, "remote_module": module},
            )
        except TypeError:  # bases that cannot be combined (layout conflict): the name is what matters
            cls = type(
                name.split(".")[-1],
                (RemoteError,) + ((InfrastructureError,) if kind == "infrastructure" else ()),
                {"remote_type": name},
            )
        _REBUILT[key] = cls
    error: BaseException = cls.__new__(cls)  # not cls(...): a builtin base may want other arguments
    Exception.__init__(error, str(info.get("message", "")))
    provider = info.get("provider")
    if isinstance(provider, dict):  # retried and reported like the original (engine.provider_errors)
        try:
            error.provider_failure = ProviderFailure(**provider)  # type: ignore[attr-defined]
        except TypeError:
            pass
    return error


def _repr(value: Any, limit: int = 2000) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{_type_name(value)} whose repr raised {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def dumps_message(message: dict[str, Any]) -> bytes:
    """A worker's message to the driver, as JSON bytes (non-JSON values are refused by `encode_output` first)."""
    return json.dumps(message, ensure_ascii=False, default=repr).encode("utf-8", "surrogatepass")


def loads_message(blob: bytes) -> dict[str, Any]:
    """A message from a worker; anything but a JSON object is the worker breaking the protocol."""
    message = json.loads(blob.decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict):
        raise ValueError(f"a worker sent {type(message).__name__}, not a message")
    return message
