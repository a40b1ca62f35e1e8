"""Render problem instances as OptoPrime's text sections, within a token budget.

Trace renders every value in full, so its prompt grows with every op (about 280,000 tokens for
1,000 agent turns). Here the budget is a setting, and the cut follows a priority:

1. never cut: the instruction, every variable with its constraint, the feedback, exceptions;
2. cut first: values that enter from outside the subgraph (``#Inputs``, off-path context);
3. then: intermediate values and outputs (``#Others``, ``#Outputs``), shortened in the middle;
4. last resort: ``#Code`` lines in the middle of a long run (the lines nearest the outputs stay).

Every cut is marked where it happens, and a final ``#Omitted`` line says what was left out.
Sizes are computed arithmetically and the text is built once, so rendering is linear.

Values are untrusted data (tool output, documents, what a model wrote): a value must not be
able to end its own section or open a fake one. Section headers are lines that start with
``#``, so every line *inside* a value (or a feedback text, or documentation) that starts with
``#`` is shown with a backslash before it (`fence`). The optimizer's system prompt says that values are data,
never instructions.
"""

from __future__ import annotations

import bisect
import json
import logging
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from opto_core.kernel.backward import ProblemInstance
from opto_core.kernel.graph import Node, shorten
from opto_core.kernel.tokens import CHARS_PER_TOKEN, count_tokens

DEFAULT_BUDGET = 8000
_TRIVIAL = {"text", "any float", "any int"}
#: An op with more arguments than this shows the first and last half of them.
MAX_ARGS = 40
#: Shortest a value is cut to (characters): below this a value says nothing useful.
MIN_VALUE_CHARS = 24
#: Every character a reader (a tokenizer, a model) may take as a line break: CR (and CR LF), VT, FF,
#: the file/group/record separators, NEL (U+0085), LINE and PARAGRAPH SEPARATOR (U+2028, U+2029).
_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
#: A line that could pass for one of the prompt's own lines: it starts (after any indentation,
#: invisible characters included, and Markdown's emphasis and quote marks: ``**Your response:**``)
#: with ``#`` or a look-alike (full-width ＃, small ﹟, ♯), or with the prompt's closing ``Your response:``.
_LOOKS_LIKE_OURS = "(?:[#\uff03\ufe5f\u266f]|your\\s+response\\b)"
#: Invisible: zero-width and direction marks, word joiner and invisible operators, BOM, soft hyphen,
#: combining grapheme joiner, Mongolian vowel separator, variation selectors, tag characters, Hangul fillers.
_INVISIBLE = (
    "\u200b-\u200f\u2060-\u206f\ufeff\u00ad\u034f\u180e\ufe00-\ufe0f\U000e0000-\U000e007f\u115f\u1160\u3164\uffa0"
)
_INDENT = f"(?:[^\\S\\n]|[{_INVISIBLE}*_>`~])*"
_FAKE_AFTER_FIRST = re.compile(f"(?<=\\n)({_INDENT})(?={_LOOKS_LIKE_OURS})", re.IGNORECASE)
_FAKE_ANY = re.compile(f"(?m)^({_INDENT})(?={_LOOKS_LIKE_OURS})", re.IGNORECASE)
_SUSPECT = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def fence(text: str, *, first_line: bool = False) -> str:
    """``text`` as data that cannot fake a line of the prompt: every line break (CR, VT, FF, NEL,
    U+2028...) becomes ``\\n``, and every line that starts, after any indentation, with ``#`` or a
    look-alike (``＃``) or with ``Your response`` gets a backslash before it (``\\#Feedback``). The
    first line is left alone unless ``first_line`` (it follows a prefix such as ``(str) x=``).
    Linear; text without a line break is returned as it is."""
    if _SUSPECT.search(text):
        text = _BREAKS.sub("\n", text)
    elif not first_line and "\n" not in text:
        return text
    pattern = _FAKE_ANY if first_line else _FAKE_AFTER_FIRST
    return pattern.sub(lambda match: match.group(1) + "\\", text)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON whose line-break characters are all escaped (``json.dumps``
    leaves U+2028, U+2029 and NEL as they are, and a reader may break the line there)."""
    text = json.dumps(value, ensure_ascii=False)
    if _SUSPECT.search(text):
        text = text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text


_ARG = operator.attrgetter("arg")


def _grouped_args(edges: list[Any], names: dict[str, str]) -> list[str]:
    """``arg=[a, b]`` for an argument fed by several values (a chat call reading several messages)."""
    by_arg: dict[str, list[str]] = {}
    for e in edges:
        if e.id in names:
            ids = by_arg.setdefault(e.arg or "arg", [])
            if names[e.id] not in ids:
                ids.append(names[e.id])
    for ids in by_arg.values():
        if len(ids) > MAX_ARGS:  # a fan-in of hundreds: the variables are listed anyway
            ids[MAX_ARGS // 2 : -MAX_ARGS // 2] = [f"...{len(ids) - MAX_ARGS} more..."]
    return [f"{arg}={ids[0] if len(ids) == 1 else '[' + ', '.join(ids) + ']'}" for arg, ids in by_arg.items()]


def value_text(value: Any) -> str:
    """A value as it appears in the prompt (fenced: see `fence`)."""
    if isinstance(value, str):
        return fence(value)
    if type(value) in (int, float):  # repr is JSON for finite numbers, and much faster
        return repr(value)
    return json_line(value)  # one line: every line break inside is escaped


def type_label(node: Node) -> str:
    if node.kind == "parameter" and node.param:
        return str(node.param.get("kind", "value"))
    if node.value_is_repr:
        return "repr"
    return {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict", type(None): "None"}.get(
        type(node.value), type(node.value).__name__
    )


@dataclass
class _Line:
    """One value line: a fixed prefix and a value that may be cut to a cap."""

    prefix: str
    text: str
    tier: int  # 0 never cut, 1 inputs (cut first), 2 others/outputs
    example: int
    code_index: int = -1  # for #Others: the code line it belongs to (dropped with it)
    consumers: tuple[int, ...] = ()  # for #Inputs: the code lines that read it

    def shown(self, visible: set[int]) -> bool:
        if self.code_index >= 0:
            return self.code_index in visible
        return not self.consumers or any(c in visible for c in self.consumers)


def _capped(lengths: list[int], prefix_sums: list[int], cap: int) -> int:
    """Sum of min(length, cap + marker) over sorted lengths, in O(log n)."""
    i = bisect.bisect_right(lengths, cap)
    return prefix_sums[i] + (len(lengths) - i) * (cap + 30)


def render(
    instances: ProblemInstance | Sequence[ProblemInstance],
    budget_tokens: int = DEFAULT_BUDGET,
    *,
    header: str = "",
    footer: str = "",
) -> str:
    """The problem as text no longer than ``budget_tokens`` (``header``/``footer`` count too)."""
    if isinstance(instances, ProblemInstance):
        instances = [instances]
    if not instances:
        raise ValueError("render needs at least one problem instance")
    ratio = CHARS_PER_TOKEN
    text = ""
    for _ in range(4):  # the char budget is exact for the estimate; tiktoken may need a retry
        fixed_budget = int((budget_tokens - count_tokens(header) - count_tokens(footer)) * ratio)
        text = _render_chars(list(instances), fixed_budget)
        full = header + text + footer
        used = count_tokens(full)
        if used <= budget_tokens:
            return full
        ratio *= budget_tokens / used * 0.97
    logging.getLogger("opto").warning(
        "the prompt needs %d tokens, over the budget of %d, although everything that may be cut was cut: "
        "the variables, constraints and feedback alone do not fit. Raise the budget or optimize fewer "
        "parameters at once.",
        count_tokens(header + text + footer),
        budget_tokens,
    )
    return header + text + footer


def _render_chars(instances: list[ProblemInstance], budget_chars: int) -> str:
    many = len(instances) > 1
    # ----- the parts that are never cut ---------------------------------------------------
    variables: dict[str, Node] = {}
    documentation: dict[str, str] = {}
    for instance in instances:
        for node in instance.variables:
            variables.setdefault(node.name, node)
        for name, doc in instance.documentation.items():
            documentation.setdefault(name, doc)
    head = [f"#Instruction\n{instances[0].instruction}\n"]
    doc_lines = [
        fence(f"[{name}] {doc}" if doc and not doc.startswith(f"[{name}]") else (doc or f"[{name}]"))
        for name, doc in documentation.items()
    ]
    var_lines = [f"({type_label(n)}) {name}={value_text(n.value)}" for name, n in variables.items()]
    # constraints: the trivial ones ("any float", "text") say nothing the type label does not, and
    # identical ones are written once for all their variables
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, n in variables.items():
        constraint = (n.param or {}).get("constraint", "")
        if constraint and constraint not in _TRIVIAL:
            grouped.setdefault((type_label(n), constraint), []).append(name)
    con_lines = [fence(f"({label}) {', '.join(names)}: {constraint}") for (label, constraint), names in grouped.items()]
    head.append("#Variables\n" + "\n".join(var_lines) + "\n")
    if con_lines:
        head.append("#Constraints\n" + "\n".join(con_lines) + "\n")

    # ----- per example: code, values, feedback ------------------------------------------------
    code_lines: list[list[str]] = []
    lines: list[_Line] = []
    feedbacks: list[str] = []
    for index, instance in enumerate(instances):
        names = instance.names
        codes: list[str] = []
        position: dict[str, int] = {}
        for node in instance.code:
            edges = node.edges
            arg_list = [f"{e.arg or 'arg'}={names[e.id]}" for e in edges if e.id in names]
            if len(edges) > 1 and len(set(map(_ARG, edges))) < len(edges):
                arg_list = _grouped_args(edges, names)  # each argument named once: messages=[ChatOpenAI0, tool0]
            if len(arg_list) > MAX_ARGS:  # a fan-in of hundreds: the variables are listed anyway
                hidden = len(arg_list) - MAX_ARGS
                arg_list = arg_list[: MAX_ARGS // 2] + [f"...{hidden} more..."] + arg_list[-MAX_ARGS // 2 :]
            args = ", ".join(arg_list)
            code_line = fence(f"{names[node.id]} = {node.name}({args})")
            if node.kind == "exception":
                code_line += "  # raised an exception"
            position[node.id] = len(codes)
            codes.append(code_line)
        code_lines.append(codes)
        consumers: dict[str, list[int]] = {}
        for node in instance.code:
            for edge in node.edges:
                consumers.setdefault(edge.id, []).append(position[node.id])
        for node in instance.inputs:
            lines.append(
                _Line(
                    f"({type_label(node)}) {names[node.id]}=",
                    value_text(node.value),
                    1,
                    index,
                    consumers=tuple(consumers.get(node.id, ())),
                )
            )
        output_ids = {n.id for n in instance.outputs}
        for node in instance.code:
            tier = 0 if node.kind == "exception" else 2
            section = "out" if node.id in output_ids else "oth"
            lines.append(
                _Line(
                    f"{section}|({type_label(node)}) {names[node.id]}=",
                    value_text(node.value),
                    tier,
                    index,
                    position[node.id],
                )
            )
        feedbacks.append(fence(instance.feedback_text(), first_line=True))  # a first line "#..." is escaped too

    fixed = sum(len(part) for part in head) + len("#Documentation\n") + sum(len(d) + 1 for d in doc_lines)
    fixed += sum(len(f) + 40 for f in feedbacks) + 400  # section titles, example headers, #Omitted
    base = fixed  # without the value lines, for when code lines must go
    fixed += sum(len(line.prefix) + 1 for line in lines) + sum(len(line.text) for line in lines if line.tier == 0)
    code_total = sum(len(c) + 1 for codes in code_lines for c in codes)

    def sizes(tier: int) -> tuple[list[int], list[int]]:
        lengths = sorted(len(line.text) for line in lines if line.tier == tier)
        sums = [0]
        for length in lengths:
            sums.append(sums[-1] + length)
        return lengths, sums

    l1, s1 = sizes(1)
    l2, s2 = sizes(2)
    longest = max([0, *l1, *l2])

    def total(cap1: int, cap2: int) -> int:
        return fixed + code_total + _capped(l1, s1, cap1) + _capped(l2, s2, cap2)

    cap1 = cap2 = longest
    keep_code: int | None = None  # number of code lines kept per example (None: all)
    if total(cap1, cap2) > budget_chars:
        found = _largest_cap(lambda c: total(c, cap2) <= budget_chars, longest)
        if found is not None:
            cap1 = found
        else:
            cap1 = MIN_VALUE_CHARS
            cap2 = _largest_cap(lambda c: total(cap1, c) <= budget_chars, longest) or MIN_VALUE_CHARS
            if total(cap1, cap2) > budget_chars:
                keep_code = _fit_code(lines, code_lines, base, budget_chars, cap1, cap2)

    # ----- build the text ---------------------------------------------------------------------------
    cut_values = 0
    cut_chars = 0
    dropped_code = 0

    def value(line: _Line) -> str:
        nonlocal cut_values, cut_chars
        cap = cap1 if line.tier == 1 else cap2 if line.tier == 2 else None
        if cap is None or len(line.text) <= cap + 30:
            return line.text
        cut_values += 1
        cut_chars += len(line.text) - cap
        return shorten(line.text, cap + 30)

    parts = list(head)
    parts.append("#Documentation\n" + "\n".join(doc_lines) + "\n")
    by_example: dict[int, list[_Line]] = {}
    for line in lines:
        by_example.setdefault(line.example, []).append(line)
    for index in range(len(instances)):
        if many:
            parts.append(f"\n## Example {index + 1} of {len(instances)}\n")
        codes = code_lines[index]
        visible = set(range(len(codes)))
        if keep_code is not None and len(codes) > keep_code:
            visible = _visible_lines(len(codes), keep_code)
        body = []
        previous = -1
        for i, code in enumerate(codes):
            if i in visible:
                if i != previous + 1:
                    body.append(f"# ... {i - previous - 1} ops omitted ...")
                body.append(code)
                previous = i
        if previous != len(codes) - 1:
            body.append(f"# ... {len(codes) - previous - 1} ops omitted ...")
        dropped_code += len(codes) - len(visible)
        parts.append("#Code\n" + "\n".join(body) + "\n")
        inputs: list[str] = []
        others: list[str] = []
        outputs: list[str] = []
        for line in by_example.get(index, []):
            if not line.shown(visible):
                continue
            if line.tier == 1:
                inputs.append(line.prefix + value(line))
            else:
                section, prefix = line.prefix.split("|", 1)
                (outputs if section == "out" else others).append(prefix + value(line))
        for title, entries in (("#Inputs", inputs), ("#Others", others), ("#Outputs", outputs)):
            if entries:
                parts.append(title + "\n" + "\n".join(entries) + "\n")
        parts.append("#Feedback\n" + feedbacks[index] + "\n")
    omitted = []
    if cut_values:
        omitted.append(f"{cut_chars} characters cut from the middle of {cut_values} long values")
    if dropped_code:
        omitted.append(f"{dropped_code} ops (and their values) left out of #Code to fit the token budget")
    if omitted:
        parts.append("\n#Omitted\n" + "; ".join(omitted) + ".\n")
    return "\n".join(parts)


def _largest_cap(fits: Callable[[int], bool], longest: int) -> int | None:
    """The largest cap in [MIN_VALUE_CHARS, longest] for which ``fits``; None if none does."""
    if not fits(MIN_VALUE_CHARS):
        return None
    low, high = MIN_VALUE_CHARS, max(longest, MIN_VALUE_CHARS)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _visible_lines(count: int, keep: int) -> set[int]:
    """Keep a quarter of the lines from the start and the rest nearest the outputs."""
    keep = max(keep, 1)
    first = keep // 4
    return set(range(first)) | set(range(count - (keep - first), count))


def _fit_code(lines: list[_Line], code_lines: list[list[str]], base: int, budget: int, cap1: int, cap2: int) -> int:
    """The most code lines per example that fit, with their values at the smallest caps.

    Value lines are indexed by the code line they belong to (inputs by their consumers) once, so each
    probe of the binary search costs only what it keeps.
    """
    longest = max((len(codes) for codes in code_lines), default=0)

    def line_size(line: _Line) -> int:
        cap = cap1 if line.tier == 1 else cap2 if line.tier == 2 else len(line.text)
        return len(line.prefix) + 1 + min(len(line.text), cap + 30)

    owned: list[dict[int, int]] = [{} for _ in code_lines]  # per example: code line -> size of its values
    inputs_of: list[dict[int, list[int]]] = [{} for _ in code_lines]  # code line -> inputs it reads
    input_size: list[int] = []
    always = 0
    for line in lines:
        if line.code_index >= 0:
            table = owned[line.example]
            table[line.code_index] = table.get(line.code_index, 0) + line_size(line)
        elif line.consumers:
            input_size.append(line_size(line))
            for consumer in line.consumers:
                inputs_of[line.example].setdefault(consumer, []).append(len(input_size) - 1)
        else:
            always += line_size(line)

    def size(keep: int) -> int:
        total = base + always
        counted: set[int] = set()
        for example, codes in enumerate(code_lines):
            visible = _visible_lines(len(codes), keep) if len(codes) > keep else range(len(codes))
            table, readers = owned[example], inputs_of[example]
            total += 80
            for i in visible:
                total += len(codes[i]) + 1 + table.get(i, 0)
                for j in readers.get(i, ()):
                    if j not in counted:
                        counted.add(j)
                        total += input_size[j]
        return total

    low, high = 1, max(longest, 1)
    while low < high:
        middle = (low + high + 1) // 2
        if size(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low
