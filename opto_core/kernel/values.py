"""Optimized values on disk: one JSON format (``opto-values/1``) that carries them to production.

An optimization run ends with values in a live workflow. To deploy them, a user saves them
(`save_values`, also ``OptimizationResult.save_values`` and ``target.save_values``), builds the
workflow afresh in another process, and writes them in with the adapter's
``apply_values(obj, values_or_path)``. The file is small and readable::

    {"format": "opto-values/1",
     "values": {"qa.prompt.system": "...", "llm.temperature": 0.2},
     "meta": {"framework": "langchain", "framework_version": "1.8.3", "saved": "2026-11-30T08:00:00Z",
              "score": 0.92}}

It never holds a secret: ``meta`` is scrubbed like the run directory's ``config.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from opto_core.kernel.binding import BoundParameters

VALUES_FORMAT = "opto-values/1"


class ValuesFileError(ValueError):
    """A values file (or document) that is not ``opto-values/1``, or belongs to another framework."""


class SavedValues(dict[str, Any]):
    """Parameter values by name, with the file's ``meta`` (framework, versions, date, score)."""

    def __init__(self, values: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
        super().__init__(values)
        self.meta: dict[str, Any] = dict(meta or {})


def document(values: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from opto_core.kernel.redact import scrub

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"format": VALUES_FORMAT, "values": dict(values), "meta": scrub({"saved": stamp, **dict(meta or {})})}


def save_values(path: str | os.PathLike[str], values: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``values`` as ``opto-values/1``. An existing file is replaced only if it is a values file."""
    from opto_core.kernel.files import write_json_atomic

    target = Path(path)
    if target.is_dir():
        raise ValuesFileError(f"{target} is a directory; give a file name such as {target / 'values.json'}")
    if target.exists():
        try:
            existing = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if not (isinstance(existing, dict) and existing.get("format") == VALUES_FORMAT):
            raise ValuesFileError(f"{target} exists and is not an opto-values file; refusing to overwrite it")
    doc = document(values, meta)
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValuesFileError(f"the values are not plain JSON: {exc}") from None
    write_json_atomic(target, doc)
    return target


def from_document(doc: Any, source: str = "the values") -> SavedValues:
    if not isinstance(doc, dict) or "format" not in doc:
        raise ValuesFileError(f"{source} is not an opto-values document (no \"format\" key)")
    if doc["format"] != VALUES_FORMAT:
        raise ValuesFileError(f"{source} has format {doc['format']!r}; this version reads {VALUES_FORMAT!r}")
    values = doc.get("values")
    if not isinstance(values, dict):
        raise ValuesFileError(f"{source}: \"values\" must be an object of parameter names to values")
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    return SavedValues(values, meta)


def read_document(path: str | os.PathLike[str]) -> Any:
    """The JSON document in a file, or a `ValuesFileError` saying why it cannot be read (for
    adapters that also read older formats of their own before `from_document`)."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValuesFileError(f"cannot read {target}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValuesFileError(f"{target} is not JSON: {exc}") from None


def load_values(path: str | os.PathLike[str]) -> SavedValues:
    """Read an ``opto-values/1`` file: a dict of values by parameter name, with ``.meta``."""
    return from_document(read_document(path), str(Path(path)))


#: Framework names older values files carry -> the distribution name graphs and files use now.
_OLD_FRAMEWORK_NAMES = {"langchain": "langchain-core"}


def resolve(values_or_path: Any, framework: str | None = None) -> SavedValues:
    """What an adapter's ``apply_values`` accepts: a path, a saved document, or a plain dict of values.

    A file or document saved from another framework is refused, naming both.
    """
    if isinstance(values_or_path, (str, os.PathLike)):
        saved = load_values(values_or_path)
    elif isinstance(values_or_path, SavedValues):
        saved = values_or_path
    elif isinstance(values_or_path, dict) and "format" in values_or_path and "values" in values_or_path:
        saved = from_document(values_or_path)
    elif isinstance(values_or_path, Mapping):
        saved = SavedValues(values_or_path)
    else:
        raise TypeError(
            f"apply_values takes a dict of values or a path to an opto-values file, got {type(values_or_path).__name__}"
        )
    theirs = saved.meta.get("framework")
    if isinstance(theirs, str):
        theirs = _OLD_FRAMEWORK_NAMES.get(theirs, theirs)
    if framework and theirs and theirs != framework:
        raise ValuesFileError(f"these values were saved from a {theirs} workflow; this is the {framework} adapter")
    return saved


def apply_saved(
    bound: BoundParameters, values_or_path: Any, framework: str | None = None, parameters: Iterable[Any] | None = None
) -> dict[str, Any]:
    """Write saved values into a workflow's `BoundParameters`: every adapter's ``apply_values``.

    ``parameters``: `Parameter` objects of your own that discovery does not find (a prompt your
    code formats, with ``meta={"used_by": ...}``); their saved values are written into them, as
    the optimization run did. Every value is validated and every name checked before anything is
    written (an unknown name is an error listing the known ones and saying how to pass your own);
    a failing write restores what was written. Returns what was applied. Frozen parameters may be
    set too: deploying is not optimizing.
    """
    from opto_core.kernel.binding import UnknownParameters

    saved = resolve(values_or_path, framework)
    if parameters is not None:
        bound = _with_own(bound, list(parameters))
    try:
        return bound.apply(dict(saved), allow_frozen=True)
    except UnknownParameters as exc:
        if exc.unknown and set(exc.unknown) <= set(saved):
            raise UnknownParameters(
                "the values name parameters this workflow does not have:",
                exc.unknown,
                exc.known,
                "A parameter of your own (a Parameter your code reads, e.g. with "
                "used_by) is not found from the object: pass it with parameters=[...]",
            ) from None
        raise


def _with_own(bound: Any, own: list[Any]) -> Any:
    """The discovered parameters (with their bindings) and the user's own, in one `BoundParameters`."""
    from opto_core.kernel.binding import BoundParameters
    from opto_core.kernel.parameters import Parameter

    combined = BoundParameters([(bound[name], bound.binding(name)) for name in bound.names()])
    for parameter in own:
        if not isinstance(parameter, Parameter):
            raise TypeError(f"parameters=[...] takes opto_core Parameter objects, got {type(parameter).__name__}")
        if parameter.name in combined and combined[parameter.name] is parameter:
            continue
        combined.add(parameter)  # a different parameter with a discovered name is an error naming it
    return combined
