"""Parameter links: which parameters a graph shows, and which run each one fed.

The graph builder (`dataflow.build_graph`) learns about parameters only through this object, so
it can be fed hand-made records and links in tests. A parameter reaches a run in one of four ways:

- its object is tagged (``metadata["opto_param_id"]``, set by `parameters_of`) and the run is that
  object's run (a prompt, a model, a tool): `Links.for_tag`;
- it is a tool's description and the model call was offered that tool: `Links.tool_descriptions`;
- it is a prompt kept in code, or a `Parameter` of yours with ``meta={"used_by": "node"}`` (inside
  the named run), and a model call received its message: the same object, its exact text, a
  template's output, or a longer text that contains it, by the core's provenance rules
  (`opto_core.kernel.provenance`): `Links.prompt_sources`;
- it is yours and a run has the name in ``used_by``: `Links.used_by`.
"""

from __future__ import annotations

from typing import Any, Iterable

from opto_adapters.langchain.parameters import Group, binding_of, group_of_parameter, live_groups
from opto_adapters.langchain.tracing.snapshots import text_of
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import Match, ProvenanceIndex


class Links:
    """The parameters to link into graphs (``None``: every object `parameters_of` tagged that still lives)."""

    def __init__(self, parameters: Iterable[Parameter] | None = None) -> None:
        self._fixed = parameters is not None
        self._tagged: dict[str, tuple[Group, list[Parameter]]] = {}
        self._variables: list[Parameter] = []
        self._extra: list[Parameter] = []
        self._indexes: dict[tuple[int, ...], ProvenanceIndex] = {}  # prompt candidates -> their index
        if parameters is not None:
            self._index(parameters)

    def _index(self, parameters: Iterable[Parameter]) -> None:
        for parameter in parameters:
            group = group_of_parameter(parameter)
            if group is None:
                self._extra.append(parameter)
            elif group.kind == "variable":
                self._variables.append(parameter)
            else:
                self._tagged.setdefault(group.tag, (group, []))[1].append(parameter)

    def refresh(self) -> Links:
        """The links for the next graph: these, or (over every live object) a fresh set, since
        objects come and go between runs."""
        links = self if self._fixed else Links([p for g in live_groups() for p in g.parameters])
        links.forget_indexes()  # values may have changed since the last graph
        for parameter in links.parameters():
            binding = binding_of(parameter)
            if binding is not None:
                try:
                    parameter.value = binding.read()  # a target may have written through its own copy
                except Exception:
                    pass
        return links

    def forget_indexes(self) -> None:
        """Drop the provenance indexes built for the last graph (the values they hold may have changed)."""
        self._indexes = {}

    def parameters(self) -> list[Parameter]:
        return [p for _, ps in self._tagged.values() for p in ps] + self._variables + self._extra

    @property
    def empty(self) -> bool:
        return not (self._tagged or self._variables or self._extra)

    # ----- lookups used by the builder ---------------------------------------------------------
    def for_tag(self, tag: str, run_type: str) -> list[tuple[Parameter, str]]:
        """The parameters of the tagged object a run used, each with its argument name on the op."""
        entry = self._tagged.get(tag)
        if entry is None or run_type not in entry[0].run_types:
            return []
        group, parameters = entry
        return [(p, group.args.get(p.name, p.name)) for p in parameters]

    def group(self, tag: str) -> Group | None:
        entry = self._tagged.get(tag)
        return entry[0] if entry else None

    def saw_variables(self, tag: str, keys: Iterable[str]) -> None:
        """A prompt received these keys in a traced run: templates may use them from now on."""
        entry = self._tagged.get(tag)
        if entry is not None and entry[0].kind == "prompt":
            entry[0].available.update(keys)

    def tool_descriptions(self, tool_name: str) -> list[Parameter]:
        return [
            p
            for group, parameters in self._tagged.values()
            if group.kind == "tool" and tool_name in group.tool_names
            for p in parameters
            if group.args.get(p.name) == "description"
        ]

    def used_by(self, run_name: str) -> list[Parameter]:
        return [p for p in self._extra if run_name in _names(p.meta.get("used_by"))]

    @staticmethod
    def _prompt_index(candidates: list[Parameter], yours: int) -> ProvenanceIndex:
        """The index of the candidates (the first ``yours`` are the user's, then prompts kept in code)."""
        index = ProvenanceIndex(text_of=text_of)
        for number, parameter in enumerate(candidates):
            if number < yours:
                if parameter.template_model is None:
                    index.register_template(parameter.value, str(number))  # a template when it has placeholders
                index.register_parameter(parameter, str(number))
                continue
            raw = getattr(binding_of(parameter), "raw", None)  # a variable's object (a literal in code has none)
            if raw is not None:
                index.register(raw(), str(number), text=_text(parameter.value), identity=True, depth=0)
            index.register_parameter(parameter, str(number))
        return index

    def prompt_sources(self, obj: Any, text: str | None, scope: Iterable[str] = ()) -> list[tuple[Parameter, Match]]:
        """The prompt parameters whose text a model call received in one message (``scope``: the
        enclosing runs' names), each with how it was found.

        The parameters that may apply (prompts kept in code; yours whose ``used_by`` names an
        enclosing run) are the producers of a small provenance index, looked up with the core's
        rules: the very message object, its exact text, a template's output (then the template,
        and the parameters whose text filled its placeholders), a contained text, long lines of it.
        A text of yours with placeholders counts as a template. Prompts kept in code are registered
        last, so they win a tie on the same text.
        """
        scope = set(scope)
        candidates: list[Parameter] = [
            p for p in self._extra if isinstance(p.value, str) and scope & set(_names(p.meta.get("used_by")))
        ]
        if not candidates and not self._variables:
            return []
        candidates += self._variables
        key = tuple(id(p) for p in candidates)
        index = self._indexes.get(key)  # one index per set of candidates and graph (values change between runs)
        if index is None:
            index = self._indexes[key] = self._prompt_index(candidates, len(candidates) - len(self._variables))
        found: list[tuple[Parameter, Match]] = []
        for match in index.find_all(obj, text=text):
            parameter = candidates[int(match.node)]
            if all(parameter is not p for p, _ in found):
                found.append((parameter, match))
        return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _names(used_by: Any) -> list[str]:
    return [used_by] if isinstance(used_by, str) else list(used_by or [])
