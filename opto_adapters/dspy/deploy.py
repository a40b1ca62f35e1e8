"""Deploying optimized DSPy values: ``apply_values`` into a freshly built program, and DSPy's own
save/load plus a sidecar for what DSPy's JSON cannot hold (tool code and descriptions, LM settings)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from opto_adapters.dspy.parameters import FRAMEWORK, ProgramParameters, bound_parameters
from opto_core.kernel.files import write_json_atomic
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import (
    apply_saved,
    read_document,
)


def apply_values(program: Any, values_or_path: Any, parameters: Sequence[Parameter] | None = None) -> dict[str, Any]:
    """Write saved values (a dict, an ``opto-values/1`` document or its path) into a freshly built program.

    ``parameters``: your own `Parameter` objects optimized with the program (discovery cannot find
    them). Every name and value is checked before anything is written; an unknown name is an error
    listing the program's parameters and saying how to pass your own, a file saved from another
    framework an error naming both. Returns what was applied. Also reads the sidecar
    ``<stem>.opto.json`` `save_optimized` writes.
    """
    params = bound_parameters(program)
    if isinstance(values_or_path, (str, os.PathLike)):
        return params.load_sidecar(read_document(values_or_path), str(Path(values_or_path)), parameters)
    return apply_saved(params, values_or_path, framework=FRAMEWORK, parameters=parameters)


def sidecar_path(path: str | Path) -> Path:
    """``program.json`` -> ``program.opto.json`` (next to the file DSPy writes)."""
    path = Path(path)
    return path.with_name(path.stem + ".opto.json")


def write_sidecar(program: Any, path: str | Path) -> Path:
    """The sidecar alone (for programs DSPy cannot serialise, e.g. with a custom-engine LM)."""
    side = Path(path)
    write_json_atomic(side, ProgramParameters(program).sidecar())
    return side


def save_optimized(program: Any, path: str | Path) -> Path:
    """``program.save(path)`` plus the sidecar with what DSPy's JSON cannot hold; returns the sidecar path."""
    path = Path(path)
    program.save(str(path))
    return write_sidecar(program, sidecar_path(path))


def load_optimized(program: Any, path: str | Path, **load_kwargs: Any) -> Any:
    """Load what `save_optimized` (or `OptoTeleprompter`) wrote into a freshly built ``program``.

    ``path`` is the file given to ``program.save`` (its state is loaded with ``program.load``),
    and its sidecar ``<stem>.opto.json`` restores tool code and descriptions and LM settings.
    Either file may be missing, not both. Returns ``program``.
    """
    path = Path(path)
    side = path if path.name.endswith(".opto.json") else sidecar_path(path)
    state = None if path == side else path
    if (state is None or not state.exists()) and not side.exists():
        raise FileNotFoundError(f"neither {path} nor its sidecar {side} exists")
    if state is not None and state.exists():
        program.load(str(state), **load_kwargs)
    if side.exists():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{side} is not valid JSON: {exc}") from None
        ProgramParameters(program).load_sidecar(data, str(side))
    return program
