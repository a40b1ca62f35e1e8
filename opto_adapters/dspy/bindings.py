"""Where each DSPy parameter lives, as `opto_core.kernel.binding.Binding`s: one small class per home.

DSPy facts these rely on (``shared/notes/dspy.md`` section 6): a predictor's signature is a class
that is replaced, never changed in place (``with_instructions``, ``with_updated_fields``); demos
are a plain list; per-predictor LM settings live in ``Predict.config``; a tool's code is
``Tool.func``; ``dspy.ReAct`` bakes every tool's description into its ``react`` predictor's
instructions when it is built, so a new description is also written into that text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import dspy

from opto_core.kernel.binding import Binding
from opto_core.kernel.code import compile_like, function_source

#: Shown as the value of an LM setting no one set (the provider's default then applies).
UNSET_DEFAULTS: dict[str, float | int] = {"temperature": 1.0, "max_tokens": 4096}


def demo_to_json(demo: Any) -> dict[str, Any]:
    items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return json.loads(json.dumps(items, allow_nan=False))


@dataclass
class SignatureBinding(Binding):
    """Instructions (``field`` None) or one output field's description of a predictor's signature."""

    predictor: Any
    field: str | None = None

    def read(self) -> str:
        signature = self.predictor.signature
        if self.field is None:
            return signature.instructions
        desc = signature.output_fields[self.field].json_schema_extra.get("desc", "")
        return "" if desc == f"${{{self.field}}}" else desc  # DSPy's placeholder for "no description"

    def write(self, value: str) -> None:
        signature = self.predictor.signature
        if self.field is None:
            self.predictor.signature = signature.with_instructions(value)
        else:  # empty: no description, written as DSPy writes it
            desc = value if value.strip() else f"${{{self.field}}}"
            self.predictor.signature = signature.with_updated_fields(self.field, desc=desc)

    def save(self) -> Any:
        return self.predictor.signature  # a class DSPy never changes in place: keeping it is exact

    def load(self, state: Any) -> None:
        self.predictor.signature = state

    def describe(self) -> str:
        return "the signature's instructions" if self.field is None else f"the description of field {self.field!r}"


@dataclass
class DemosBinding(Binding):
    """A predictor's few-shot demos, as JSON objects (``dspy.Example``s in the program)."""

    predictor: Any

    def read(self) -> list[dict[str, Any]]:
        return [demo_to_json(d) for d in self.predictor.demos]

    def write(self, value: list[dict[str, Any]]) -> None:
        self.predictor.demos = [dspy.Example(**demo) for demo in value]

    def save(self) -> Any:
        return list(self.predictor.demos)

    def load(self, state: Any) -> None:
        self.predictor.demos = list(state)

    def describe(self) -> str:
        return "Predict.demos"


@dataclass
class LMSettingBinding(Binding):
    """One LM setting of a predictor (``Predict.config[key]``), read as the request will see it."""

    predictor: Any
    key: str
    kind: str  # "float" | "int"

    def effective(self) -> tuple[Any, bool]:
        """The value the next request uses, and whether anyone set it (else the provider's default applies)."""
        if self.predictor.config.get(self.key) is not None:
            return self.predictor.config[self.key], True
        lm = self.predictor.lm or dspy.settings.lm
        value = getattr(lm, "kwargs", {}).get(self.key) if lm is not None else None
        return value, value is not None

    def read(self) -> Any:
        value, known = self.effective()
        if not known:
            return UNSET_DEFAULTS[self.key]
        return float(value) if self.kind == "float" else int(value)

    def write(self, value: Any) -> None:
        _, known = self.effective()
        if not known and value == UNSET_DEFAULTS[self.key] and self.key not in self.predictor.config:
            return  # the shown default, unchanged: keep it unset
        self.predictor.config = {**self.predictor.config, self.key: value}

    def save(self) -> Any:
        return dict(self.predictor.config)

    def load(self, state: Any) -> None:
        self.predictor.config = dict(state)

    def describe(self) -> str:
        return f"Predict.config[{self.key!r}]"


@dataclass
class LMConfigBinding(Binding):
    """The rest of a predictor's LM config (``Predict.config`` without the keys other parameters own:
    ``n``, ``stop``, a temperature when it is no parameter...), so that deploying writes it with rollback."""

    predictor: Any
    owned: tuple[str, ...] = ()  # keys written by other parameters of this predictor (temperature, max_tokens)

    def read(self) -> dict[str, Any]:
        rest = {k: v for k, v in self.predictor.config.items() if k not in self.owned}
        return json.loads(json.dumps(rest, allow_nan=False))

    def write(self, value: dict[str, Any]) -> None:
        kept = {k: v for k, v in self.predictor.config.items() if k in self.owned}
        self.predictor.config = {**kept, **value}

    def save(self) -> Any:
        return dict(self.predictor.config)

    def load(self, state: Any) -> None:
        self.predictor.config = dict(state)

    def describe(self) -> str:
        return "Predict.config"


@dataclass
class ToolCodeBinding(Binding):
    """A tool's Python function (``Tool.func``); new source is compiled like the original by the core."""

    tool: Any
    original: Any
    label: str

    def read(self) -> str:
        return function_source(self.tool.func)

    def write(self, value: str) -> None:
        self.tool.func = compile_like(value, self.original, label=self.label)

    def save(self) -> Any:
        return self.tool.func

    def load(self, state: Any) -> None:
        self.tool.func = state

    def describe(self) -> str:
        return f"the function of tool {self.tool.name!r}"


@dataclass
class ToolDescBinding(Binding):
    """A tool's description (``Tool.desc``) and, for a ReAct tool, its line in the agent's instructions."""

    tool: Any
    react: Any = None  # the dspy.ReAct that lists the tool, if any

    def read(self) -> str:
        return self.tool.desc or ""

    def write(self, value: str) -> None:
        old_line = str(self.tool)
        self.tool.desc = value
        if self.react is not None:
            rewrite_tool_line(self.react, self.tool, old_line)

    def save(self) -> Any:
        return self.tool.desc, (self.react.react.signature if self.react is not None else None)

    def load(self, state: Any) -> None:
        self.tool.desc, signature = state
        if self.react is not None:
            self.react.react.signature = signature

    def describe(self) -> str:
        return f"the description of tool {self.tool.name!r}"


def rewrite_tool_line(react: Any, tool: Any, old_line: str) -> None:
    """Rewrite the line ``(k) <tool>`` that ReAct baked into its ``react`` predictor's instructions."""
    predictor = react.react
    text = predictor.signature.instructions
    new_line = str(tool)
    if old_line in text:
        text = text.replace(old_line, new_line)
    else:  # the instructions were rewritten: find the tool's numbered line, else add one
        pattern = re.compile(rf"^(\s*\(\d+\)\s+){re.escape(tool.name)}\b.*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + new_line, text, count=1)
        else:
            count = len(re.findall(r"^\s*\(\d+\)\s", text, re.MULTILINE))
            marker = "When providing `next_tool_args`"
            line = f"({count + 1}) {new_line}"
            text = text.replace(marker, line + "\n" + marker, 1) if marker in text else text + "\n" + line
    predictor.signature = predictor.signature.with_instructions(text)
