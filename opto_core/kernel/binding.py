"""The write-back model: where each parameter's value lives in a live workflow, and how it changes.

Optimizing a workflow in place means writing values into objects the user built (a prompt
template, a model's temperature, a tool's function) and being able to take every write back.
Every target does it the same way, through two pieces:

- a `Binding` knows one value's home: how to ``read`` the live value, ``write`` a new one,
  ``refresh`` what the framework caches from it (a serialization, a tool schema copied into a
  model binding), optionally ``verify`` that the write took effect, and ``save``/``load`` the raw
  state that undoes a write exactly (caches included, not only the value);
- `BoundParameters` holds the target's `Parameter` objects with their bindings. It is the one
  implementation of the `Target` write contract (see ``opto_core/target.py``): the same
  `Parameter` object on every read, one include/exclude rule, validation before anything is
  written, ordered writes that roll back all earlier ones when one fails, ``snapshot``/``restore``,
  and ``values``/``apply``.

A parameter without a binding keeps its value in the `Parameter` itself (plain-Python workflows
read ``parameter.value`` when they run); writing it is assigning ``parameter.value``.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from opto_core.kernel.parameters import InvalidValue, Parameter


class UnknownParameters(KeyError, ValueError):
    """Names (or include/exclude patterns) that match no parameter; the message lists the real names.

    Both a ``KeyError`` (a name not found) and a ``ValueError`` (a bad argument), so either handler catches it.
    """

    def __init__(self, what: str, unknown: Sequence[str], known: Sequence[str], hint: str = "") -> None:
        self.unknown = list(unknown)
        self.known = list(known)
        super().__init__(f"{what} {self.unknown}; the parameters are: {self.known}" + (f". {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class FrozenParameter(ValueError):
    """A value for a parameter that is not trainable (excluded, or frozen by its owner)."""


class WriteError(RuntimeError):
    """A write failed half-way; everything written before it was restored. Names the binding and the cause."""

    def __init__(self, parameter: str, binding: Binding, cause: BaseException) -> None:
        self.parameter = parameter
        self.cause = cause
        super().__init__(
            f"writing {parameter!r} through {binding.describe()} failed: "
            f"{type(cause).__name__}: {cause}; every value written before it was restored"
        )


class Binding:
    """Where one value lives in a live framework object. Subclasses override ``read`` and ``write``.

    The defaults make a binding whose raw state is its value; a binding whose write changes more
    than the value (a tool schema, a cached serialization) overrides ``save`` and ``load`` so
    that undo is exact.
    """

    def read(self) -> Any:
        """The live value, as the framework holds it now."""
        raise NotImplementedError

    def write(self, value: Any) -> None:
        """Put an already-validated value into the live object."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Drop or rebuild what the framework caches from the value (called after every write)."""

    def verify(self, value: Any) -> None:
        """Raise if the write did not take effect (called after ``write`` and ``refresh``)."""

    def save(self) -> Any:
        """The raw state that ``load`` puts back exactly."""
        return copy.deepcopy(self.read())

    def load(self, state: Any) -> None:
        self.write(state)
        self.refresh()

    def describe(self) -> str:
        """A short text naming the value's home, for error messages."""
        return type(self).__name__


@dataclass
class AttributeBinding(Binding):
    """A plain attribute of an object (``model.temperature``), read and written with getattr/setattr."""

    obj: Any
    attribute: str

    def read(self) -> Any:
        return getattr(self.obj, self.attribute)

    def write(self, value: Any) -> None:
        setattr(self.obj, self.attribute, value)

    def verify(self, value: Any) -> None:
        if getattr(self.obj, self.attribute) != value:
            raise RuntimeError(f"{self.describe()} still reads {getattr(self.obj, self.attribute)!r}")

    def describe(self) -> str:
        return f"{type(self.obj).__name__}.{self.attribute}"


@dataclass
class ItemBinding(Binding):
    """One key of a dict-like object (``llm_config["temperature"]``)."""

    mapping: Any
    key: Any

    def read(self) -> Any:
        return self.mapping[self.key]

    def write(self, value: Any) -> None:
        self.mapping[self.key] = value

    def describe(self) -> str:
        return f"[{self.key!r}] of a {type(self.mapping).__name__}"


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` equals one of ``patterns`` or matches it as a glob (``"prompt.*"``)."""
    return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select(
    names: Sequence[str], include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> set[str]:
    """The one include/exclude rule: which of ``names`` stay trainable.

    ``include`` (names or globs) keeps only what it matches; ``exclude`` then freezes what it
    matches. A pattern that matches no name is an error listing the real names: a typo must not
    silently optimize (or freeze) the wrong thing.
    """
    names = list(names)
    chosen = set(names)
    for what, patterns in (("include", include), ("exclude", exclude)):
        if patterns is None:
            continue
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        unknown = [p for p in patterns if not any(matches(n, [p]) for n in names)]
        if unknown:
            plural = "patterns match" if len(unknown) > 1 else "pattern matches"
            raise UnknownParameters(f"{what} {plural} no parameter:", unknown, names)
        hit = {n for n in names if matches(n, patterns)}
        chosen = chosen & hit if what == "include" else chosen - hit
    return chosen


class BoundParameters:
    """A target's parameters with their bindings: the one write-back model every target uses.

    ``include``/``exclude`` follow `select`: a parameter left out is frozen (``trainable=False``),
    not dropped, so it still appears in the graph as context the optimizer may read.
    """

    def __init__(
        self,
        entries: Iterable[Parameter | tuple[Parameter, Binding | None]] = (),
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> None:
        self._parameters: dict[str, Parameter] = {}
        self._bindings: dict[str, Binding | None] = {}
        for entry in entries:
            parameter, binding = entry if isinstance(entry, tuple) else (entry, None)
            self.add(parameter, binding)
        if include is not None or exclude is not None:
            self.freeze_except(select(list(self._parameters), include, exclude))

    # ----- building ---------------------------------------------------------------------------
    def add(self, parameter: Parameter, binding: Binding | None = None) -> Parameter:
        if not isinstance(parameter, Parameter):
            raise TypeError(f"expected an opto_core Parameter, got {type(parameter).__name__}")
        if parameter.name in self._parameters and self._parameters[parameter.name] is not parameter:
            raise ValueError(f"parameter names must be unique, repeated: {parameter.name!r}")
        self._parameters[parameter.name] = parameter
        self._bindings[parameter.name] = binding
        return parameter

    def freeze_except(self, trainable: set[str]) -> None:
        for name, parameter in self._parameters.items():
            if name not in trainable:
                parameter.trainable = False

    # ----- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters())

    def __len__(self) -> int:
        return len(self._parameters)

    def __contains__(self, name: object) -> bool:
        return name in self._parameters

    def __getitem__(self, name: str) -> Parameter:
        return self._parameters[name]

    def names(self) -> list[str]:
        return list(self._parameters)

    def binding(self, name: str) -> Binding | None:
        return self._bindings[name]

    def parameters(self) -> list[Parameter]:
        """The same `Parameter` objects every time, each ``.value`` read fresh from its live object."""
        for name, parameter in self._parameters.items():
            binding = self._bindings[name]
            if binding is not None:
                try:
                    parameter.value = binding.read()
                except Exception:  # an object that cannot be read back keeps the last known value
                    pass
        return list(self._parameters.values())

    def values(self, trainable_only: bool = True) -> dict[str, Any]:
        return {p.name: copy.deepcopy(p.value) for p in self.parameters() if p.trainable or not trainable_only}

    # ----- checking -----------------------------------------------------------------------------
    def validate(self, updates: dict[str, Any], *, allow_frozen: bool = False) -> dict[str, Any]:
        """Every value checked by its `Parameter` before anything is written; unknown names are an error."""
        unknown = [name for name in updates if name not in self._parameters]
        if unknown:
            raise UnknownParameters("unknown parameters", unknown, list(self._parameters))
        frozen = [name for name in updates if not self._parameters[name].trainable]
        if frozen and not allow_frozen:
            raise FrozenParameter(
                f"parameters {frozen} are frozen (not trainable); trainable: "
                f"{[n for n, p in self._parameters.items() if p.trainable]}"
            )
        return {name: self._parameters[name].validate(value) for name, value in updates.items()}

    def invalid(self) -> dict[str, str]:
        """Parameters whose live value no longer passes validation (something wrote around us): name -> reason."""
        problems: dict[str, str] = {}
        for parameter in self.parameters():
            try:
                parameter.validate(parameter.value)
            except InvalidValue as exc:
                problems[parameter.name] = exc.reason
        return problems

    # ----- writing --------------------------------------------------------------------------------
    def apply(self, updates: dict[str, Any], *, validate: bool = True, allow_frozen: bool = False) -> dict[str, Any]:
        """Validate, then write in parameter order; if one write fails, restore every earlier one.

        Returns what was written (the validated values). Raises `UnknownParameters`,
        `FrozenParameter`, `InvalidValue` (nothing written) or `WriteError` (all restored).
        """
        accepted = self.validate(updates, allow_frozen=allow_frozen) if validate else dict(updates)
        ordered = [name for name in self._parameters if name in accepted]
        saved = self.snapshot(ordered)
        written: list[str] = []
        for name in ordered:
            binding = self._bindings[name]
            try:
                if binding is not None:
                    binding.write(accepted[name])
                    binding.refresh()
                    binding.verify(accepted[name])
                self._parameters[name].value = copy.deepcopy(accepted[name])
                written.append(name)
            except Exception as exc:
                self.restore(saved)
                raise WriteError(name, binding or _ValueOnly(), exc) from exc
        return {name: accepted[name] for name in ordered}

    def snapshot(self, names: Sequence[str] | None = None) -> dict[str, tuple[Any, Any]]:
        """Everything `restore` needs to undo later writes: each binding's raw state and the value."""
        chosen = list(self._parameters) if names is None else list(names)
        state: dict[str, tuple[Any, Any]] = {}
        for name in chosen:
            binding = self._bindings[name]
            parameter = self._parameters[name]
            state[name] = (binding.save() if binding is not None else None, copy.deepcopy(parameter.value))
        return state

    def restore(self, snapshot: dict[str, tuple[Any, Any]]) -> None:
        """Put back exactly what `snapshot` captured, newest write first (bindings may share state)."""
        for name in reversed(list(self._parameters)):
            if name not in snapshot:
                continue
            raw, value = snapshot[name]
            binding = self._bindings[name]
            if binding is not None:
                binding.load(raw)
            self._parameters[name].value = copy.deepcopy(value)


class _ValueOnly(Binding):
    def describe(self) -> str:
        return "the Parameter's own value"
