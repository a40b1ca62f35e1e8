"""Templates: text with placeholders, and the texts it produced.

A prompt is often not used as written: a program fills it in first (``SYSTEM.format(company=...)``,
``"%s" % x``, ``string.Template``, a Jinja prompt). To credit such a parameter, the core must
recognise its *output* in what a model received; to deploy a new version of it in a program it
cannot change (the gateway), the core must fill the new version with the values the program put
into the old one. Both are one model, kept here and nowhere else:

- `Template.parse(text, style=None)` splits a text into **literals** (the constant parts, in
  order) and **slots** (the placeholders, in order). ``None`` when the text has no placeholder.
- `Template.match(text)` checks that a whole text is an output of the template: every literal in
  order, each placeholder a wildcard. The match carries what each placeholder bound (``values``)
  and where (``spans``). `Template.search` finds an output *inside* a longer text.
- `Template.render(values)` fills the placeholders back in, so that
  ``new.render(old.match(text).values)`` is the text the program would have produced with the new
  version (match old -> values -> render new).
- `check_placeholders(original, new)` says why a suggested new version is unusable: it dropped a
  placeholder the program fills, or invented one nothing fills.

Styles (``Template.style``), and the **detection order** used when ``style`` is not given (the
first style under which the text is a valid template with at least one placeholder wins):

1. ``"format"``: `str.format` fields ``{name}``, ``{0}``, ``{}`` (numbered from 0 in order),
   ``{user.name}``, ``{name!r:>10}``; ``{{`` and ``}}`` are literal braces. A text whose braces do
   not form valid fields (JSON such as ``{"a": 1}``) is not a format template, nor one whose every
   field is written ``${name}`` (that is string.Template's spelling).
2. ``"jinja"``: ``{{ expression }}`` (the placeholder's name is the expression without spaces:
   ``{{ user.name | upper }}`` is ``user.name|upper``); ``{% ... %}`` tags and whole blocks
   (``{% for %}...{% endfor %}``) are wildcards whose text is carried over by `render`; ``{# #}``
   comments produce nothing; ``-`` whitespace control and the dropped final newline follow
   Jinja's defaults. Mustache sections (``{{#x}}``) are not understood (they stay literal).
3. ``"printf"``: ``%(name)s`` or positional ``%s``, ``%d``, ``%r``, ``%.2f``... (numbered from 0);
   ``%%`` is a literal ``%``. Detected only when *every* ``%`` is part of a conversion (so "50% off"
   is no template) and no conversion uses the space flag or ``*``.
4. ``"dollar"``: `string.Template`'s ``$name`` and ``${name}``; ``$$`` is a literal ``$``; a ``$``
   before anything else (``$5``) stays literal, as in ``safe_substitute``.

**The matching rule** (deterministic, linear in the text's length, no regular expression):
literals are found left to right, each at its **leftmost** occurrence after the previous one, so
each placeholder binds the **shortest** text that lets the rest match; the first literal must
start the text and the last must end it (`match`). Placeholders with no literal between them:
all but the last bind the empty text. A placeholder used twice must bind the same text both
times; the leftmost binding is the only one tried (no backtracking), and a disagreement means no
match. In `search`, the first literal is found at its leftmost occurrence from ``start``; a
placeholder that opens (closes) the template binds from ``start`` (to the end of the text), since
nothing delimits it. For templates with wildcards only, leftmost placement finds a match whenever
one exists, so the rule loses no true match except through a repeated placeholder.

`render` inserts each value as text (``str(value)``), verbatim: the values a match bound are
already formatted, so conversions (``!r``) and format specs (``:>10``) are not applied again.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "STYLES",
    "STYLE_NAMES",
    "Placeholder",
    "Template",
    "TemplateError",
    "TemplateMatch",
    "check_placeholders",
    "literal_fragments",
]

#: The template styles, in detection order (see the module doc).
STYLES: tuple[str, ...] = ("format", "jinja", "printf", "dollar")
#: What each style is called in a message to a person or an optimizer.
STYLE_NAMES = {"format": "str.format", "jinja": "Jinja", "printf": "printf (%)", "dollar": "string.Template ($)"}


class TemplateError(ValueError):
    """A text that is not a valid template of the style asked for (the message says why)."""


@dataclass(frozen=True)
class Placeholder:
    """One placeholder of a template, where it stands.

    ``name`` is the key of its value (``company``, ``0`` for the first positional one, a Jinja
    expression without spaces); ``source`` is how it is written (``{company!r:>10}``). A
    ``block`` is a Jinja tag or block (``{% for %}...{% endfor %}``): a wildcard whose name is its
    source; it is no variable of the program, and ``uses`` lists the variables inside it.
    """

    name: str
    source: str
    block: bool = False
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class TemplateMatch:
    """A text (or part of one) that a template produced, and what each placeholder bound.

    ``values``: placeholder name -> the text it bound (Jinja blocks are in ``blocks`` instead);
    ``spans``: one ``(name, start, end)`` per placeholder occurrence, in order, offsets into
    ``text``; ``start``/``end``: the matched part of ``text`` (all of it for `Template.match`).
    """

    template: Template
    text: str
    start: int
    end: int
    values: dict[str, str]
    blocks: dict[str, str] = field(default_factory=dict)
    spans: tuple[tuple[str, int, int], ...] = ()

    @property
    def matched(self) -> str:
        """The part of ``text`` the template produced."""
        return self.text[self.start : self.end]

    @property
    def whole(self) -> bool:
        """Whether the template produced the whole text (not only a part of it)."""
        return self.start == 0 and self.end == len(self.text)


@dataclass(frozen=True)
class Template:
    """A text split into literals and placeholders, in one style (build it with `Template.parse`).

    ``literals`` has one more item than ``slots``: ``literals[i]`` stands before ``slots[i]`` and
    ``literals[-1]`` after the last slot (empty strings where two stand side by side). Literals are
    the text as produced (``{{`` in a format template is the literal ``{``).
    """

    text: str
    style: str
    literals: tuple[str, ...]
    slots: tuple[Placeholder, ...]

    # ----- building -------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, style: str | None = None) -> Template | None:
        """The template in ``text``, or ``None`` when it has no placeholder.

        ``style`` (one of `STYLES`) parses under that style only and raises `TemplateError` when
        the text is not valid in it; without it, the first style of the detection order under
        which the text is a valid template wins (see the module doc).
        """
        if not isinstance(text, str):
            raise TypeError(f"a template is text, got {type(text).__name__}")
        if style is not None:
            if style not in STYLES:
                raise ValueError(f"unknown template style {style!r} (known: {', '.join(STYLES)})")
            literals, slots = _PARSERS[style](text, False)
            return cls(text, style, tuple(literals), tuple(slots)) if slots else None
        for candidate in STYLES:
            try:
                literals, slots = _PARSERS[candidate](text, True)
            except TemplateError:
                continue
            if slots:
                return cls(text, candidate, tuple(literals), tuple(slots))
        return None

    # ----- reading --------------------------------------------------------------------------------
    @property
    def placeholders(self) -> tuple[str, ...]:
        """Every variable the template uses, once each, in order of first appearance (those inside
        Jinja blocks too; positional ones as ``"0"``, ``"1"``...)."""
        names: dict[str, None] = {}
        for slot in self.slots:
            for name in slot.uses if slot.block else (slot.name, *slot.uses):
                names.setdefault(name, None)
        return tuple(names)

    def source_of(self, name: str) -> str:
        """How a placeholder is written in this template (``{company}``), for messages."""
        for slot in self.slots:
            if slot.name == name and not slot.block:
                return slot.source
        return _written(self.style, name)

    @property
    def literal_chars(self) -> int:
        """How many constant characters the template has: the more, the more specific a match."""
        return sum(len(literal) for literal in self.literals)

    def fragments(self, min_length: int) -> list[str]:
        """The literal pieces of at least ``min_length`` characters (stripped; split at line ends),
        longest first: what partial matching looks for when the whole template does not match."""
        return literal_fragments(self.literals, min_length)

    # ----- matching -------------------------------------------------------------------------------
    def match(self, text: str) -> TemplateMatch | None:
        """The match when ``text`` as a whole is an output of this template, else ``None``."""
        return self._match(text, 0, anchored=True)

    def search(self, text: str, start: int = 0) -> TemplateMatch | None:
        """The leftmost output of this template inside ``text`` (from ``start``), else ``None``."""
        return self._match(text, start, anchored=False)

    def _match(self, text: str, start: int, anchored: bool) -> TemplateMatch | None:
        if not isinstance(text, str):
            return None
        literals, slots = self.literals, self.slots
        first, last = literals[0], literals[-1]
        size = len(text)
        if anchored:
            if not text.startswith(first) or not text.endswith(last) or size < len(first) + len(last):
                return None
            begin, limit = 0, size - len(last)  # middle literals must end by `limit`
        else:
            begin = text.find(first, start) if first else start
            if begin < 0:
                return None
            limit = size
        position = begin + len(first)
        spans: list[tuple[str, int, int]] = []
        end = position
        for k, slot in enumerate(slots):
            literal = literals[k + 1]
            if k == len(slots) - 1:  # the last slot: up to the last literal
                if anchored:
                    stop, end = limit, size
                elif literal:
                    stop = text.find(literal, position)
                    if stop < 0:
                        return None
                    end = stop + len(literal)
                else:
                    stop = end = size
            elif not literal:  # two placeholders side by side: the first binds nothing
                stop = end = position
            else:
                stop = text.find(literal, position, limit)
                if stop < 0:
                    return None
                end = stop + len(literal)
            spans.append((slot.name, position, stop))
            position = end
        values: dict[str, str] = {}
        blocks: dict[str, str] = {}
        for slot, (name, left, right) in zip(slots, spans):
            bound = text[left:right]
            into = blocks if slot.block else values
            if into.setdefault(name, bound) != bound:
                return None  # a repeated placeholder bound two different texts
        return TemplateMatch(self, text, begin, end, values, blocks, tuple(spans))

    # ----- rendering ------------------------------------------------------------------------------
    def render(self, values: Mapping[str, Any] | TemplateMatch) -> str:
        """The text this template produces with ``values`` (by placeholder name), in its own style.

        A `TemplateMatch` may be passed as is (its Jinja block texts are used too). Each value is
        inserted as ``str(value)``, verbatim. A placeholder with no value raises `TemplateError`.
        """
        blocks: Mapping[str, Any] = {}
        if isinstance(values, TemplateMatch):
            blocks = values.blocks
            values = values.values
        parts = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:]):
            source = blocks if slot.block and slot.name in blocks else values
            if slot.name not in source:
                kind = "the Jinja block" if slot.block else "the placeholder"
                raise TemplateError(f"no value for {kind} {slot.source}")
            parts.append(str(source[slot.name]))
            parts.append(literal)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Template({self.text!r}, style={self.style!r}, placeholders={list(self.placeholders)})"


# ----- checking a new version -----------------------------------------------------------------------------
def check_placeholders(original: str | Template, new: str) -> list[str]:
    """Why ``new`` cannot replace the template ``original`` (an empty list when it can).

    The new text is read in the original's style. It must keep every placeholder the original has
    (the program fills each one; a dropped one silently loses what it carried) and add none (the
    program fills nothing else, so it would fail or stay unfilled). Each problem is one sentence
    addressed to the optimizer, e.g. ``the template must keep {company}; the new value dropped it``.
    """
    template = original if isinstance(original, Template) else Template.parse(original)
    if template is None:
        return []
    if not isinstance(new, str):
        return [f"expected the template as text, got {type(new).__name__}"]
    style = STYLE_NAMES[template.style]
    try:
        candidate = Template.parse(new, template.style)
    except TemplateError as exc:
        return [
            f"the new value is not a valid {style} template: {exc}; write placeholders as "
            f"{_written(template.style, 'name')}, as the original does"
        ]
    kept = candidate.placeholders if candidate is not None else ()
    problems: list[str] = []
    dropped = [name for name in template.placeholders if name not in kept]
    invented = [name for name in kept if name not in template.placeholders]
    if dropped:
        which = ", ".join(_described(template, name) for name in dropped)
        problems.append(
            f"the template must keep {which}; the new value dropped "
            + ("it" if len(dropped) == 1 else "them")
            + (
                f" (write placeholders in {style} style, e.g. {template.source_of(dropped[0])})"
                if candidate is None and _other_style(new, template.style)
                else ""
            )
        )
    if invented:
        which = ", ".join(candidate.source_of(name) for name in invented) if candidate else ""
        problems.append(
            f"the new value adds {which}, which the program never fills; use only "
            + ", ".join(template.source_of(name) for name in template.placeholders)
        )
    return problems


def _described(template: Template, name: str) -> str:
    source = template.source_of(name)
    return f"{source} (positional placeholder {int(name) + 1})" if name.isdigit() and name not in source else source


def _other_style(text: str, style: str) -> bool:
    found = Template.parse(text)
    return found is not None and found.style != style


def literal_fragments(literals: Iterable[str], min_length: int) -> list[str]:
    """Pieces of constant text of at least ``min_length`` characters, longest first.

    Each literal is split at line ends and stripped; shorter pieces are left out (a short piece
    is found in unrelated texts by chance). Used by partial matching in the provenance index.
    """
    pieces: dict[str, None] = {}
    for literal in literals:
        for line in literal.splitlines():
            piece = line.strip()
            if len(piece) >= min_length:
                pieces.setdefault(piece, None)
    return sorted(pieces, key=len, reverse=True)


# ----- the parsers: text -> (literals, slots) -----------------------------------------------------------------
def _written(style: str, name: str) -> str:
    return {"format": "{%s}", "jinja": "{{ %s }}", "printf": "%%(%s)s", "dollar": "$%s"}[style] % name


_FORMATTER = string.Formatter()
_ATTRIBUTE_OR_INDEX = re.compile(r"(?:\.[^\W\d]\w*|\[[^\]]+\])*")


def _format_field(field_name: str) -> tuple[str, str]:
    """(base, rest) of a str.format field name, or raise when `.format` would not accept it."""
    base = field_name.split(".", 1)[0].split("[", 1)[0]
    rest = field_name[len(base) :]
    if not (base == "" or base.isdigit() or base.isidentifier()) or _ATTRIBUTE_OR_INDEX.fullmatch(rest) is None:
        raise TemplateError(f"{{{field_name}}} is not a valid str.format field")
    return base, rest


def _parse_format(text: str, detecting: bool) -> tuple[list[str], list[Placeholder]]:
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateError(str(exc)) from None
    literals, slots = [""], []
    automatic: bool | None = None
    counter = dollars = 0
    for literal, field_name, spec, conversion in parsed:
        literals[-1] += literal
        if field_name is None:
            continue
        dollars += literals[-1].endswith("$")
        base, rest = _format_field(field_name)
        if conversion is not None and conversion not in "rsa":
            raise TemplateError(f"unknown conversion !{conversion} in {{{field_name}!{conversion}}}")
        numbered = base == ""
        if automatic is None:
            automatic = numbered
        elif automatic != numbered and (numbered or base.isdigit()):
            raise TemplateError("cannot switch between automatic ({}) and manual ({0}) field numbering")
        if numbered:
            base, counter = str(counter), counter + 1
        source = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        nested = tuple(_parse_format(spec, detecting)[1]) if spec and "{" in spec else ()
        slots.append(Placeholder(base + rest, source, uses=tuple(p.name for p in nested)))
        literals.append("")
    if detecting and slots and dollars == len(slots):
        raise TemplateError("every field is written ${name}: a string.Template, not a str.format template")
    return literals, slots


_PRINTF = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?(?P<flags>[#0\- +]*)(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<type>[diouxXeEfFgGcrsa%])"
)


def _parse_printf(text: str, detecting: bool) -> tuple[list[str], list[Placeholder]]:
    literals, slots = [""], []
    position, counter = 0, 0
    keyed: bool | None = None
    while True:
        percent = text.find("%", position)
        if percent < 0:
            literals[-1] += text[position:]
            break
        literals[-1] += text[position:percent]
        found = _PRINTF.match(text, percent)
        if found is None:
            raise TemplateError(f"a '%' at character {percent} starts no conversion")
        position = found.end()
        if found["type"] == "%" and found.end() - percent == 2:
            literals[-1] += "%"
            continue
        if "*" in (found["width"] or "") + (found["precision"] or "") or found["type"] == "%":
            raise TemplateError(f"{found.group(0)!r}: '*' widths and '%' conversions with options are not supported")
        if detecting and " " in found["flags"]:
            raise TemplateError(f"{found.group(0)!r} looks like prose, not a conversion")
        has_key = found["key"] is not None
        if keyed is not None and keyed != has_key:
            raise TemplateError("a printf template mixes %(name)s and positional conversions")
        keyed = has_key
        name = found["key"] if has_key else str(counter)
        counter += not has_key
        slots.append(Placeholder(name, found.group(0)))
        literals.append("")
    return literals, slots


_DOLLAR = string.Template.pattern


def _parse_dollar(text: str, detecting: bool) -> tuple[list[str], list[Placeholder]]:
    literals, slots = [""], []
    position = 0
    for found in _DOLLAR.finditer(text):
        literals[-1] += text[position : found.start()]
        position = found.end()
        name = found["named"] or found["braced"]
        if name is None:  # "$$" is a literal "$"; an invalid "$" stays as written
            literals[-1] += "$" if found["escaped"] is not None else found.group(0)
            continue
        slots.append(Placeholder(name, found.group(0)))
        literals.append("")
    literals[-1] += text[position:]
    return literals, slots


_JINJA = re.compile(
    r"\{\{(?P<vl>[-+]?)(?P<expr>.*?)(?P<vr>-?)\}\}|\{%(?P<tl>[-+]?)(?P<tag>.*?)(?P<tr>-?)%\}"
    r"|\{#(?P<cl>[-+]?).*?(?P<cr>-?)#\}",
    re.DOTALL,
)
_JINJA_EXPRESSION = re.compile(r"[^\W\d]\w*(?:\s*(?:\.\s*\w+|\[[^\]]*\]))*(?:\s*\|.*)?", re.DOTALL)
#: Tags that open a block closed by ``end<tag>`` (``set`` only without ``=``: ``{% set x %}...{% endset %}``).
_JINJA_BLOCKS = ("if", "for", "macro", "call", "filter", "set", "block", "with", "autoescape", "raw", "trans")


def _parse_jinja(text: str, detecting: bool) -> tuple[list[str], list[Placeholder]]:
    literals, slots = [""], []
    position = 0
    open_block: list[str] = []  # the keywords of the open blocks
    block_start = 0
    uses: dict[str, None] = {}
    local: set[str] = set()  # names a block binds itself (loop targets, set)
    trim_next = False
    for found in _JINJA.finditer(text):
        before = text[position : found.start()]
        if trim_next:
            before = before.lstrip()
        if found["vl"] == "-" or found["tl"] == "-" or found["cl"] == "-":
            before = before.rstrip()
        trim_next = "-" in (found["vr"] or "", found["tr"] or "", found["cr"] or "")
        position = found.end()
        if open_block:  # inside a block: only note its variables and nesting
            if found["expr"] is not None or found["tag"] is not None:
                _jinja_reads(found["expr"] if found["expr"] is not None else found["tag"], uses, local)
            if found["tag"] is not None:
                _jinja_nesting(found["tag"], open_block)
                if not open_block:
                    source = text[block_start : found.end()]
                    slots.append(Placeholder(source, source, block=True, uses=tuple(uses)))
                    literals.append("")
            continue
        literals[-1] += before
        if found["expr"] is not None:
            expression = found["expr"].strip()
            if _JINJA_EXPRESSION.fullmatch(expression) is None:
                if detecting:
                    raise TemplateError(f"{found.group(0)!r} is no Jinja expression")
                literals[-1] += found.group(0)  # an expression we cannot name: keep it as text
                continue
            slots.append(Placeholder(_jinja_name(expression), found.group(0)))
            literals.append("")
        elif found["tag"] is not None:
            _jinja_nesting(found["tag"], open_block)
            if open_block:
                block_start, uses, local = found.start(), {}, set()
                _jinja_reads(found["tag"], uses, local)
            else:  # a lone tag ({% include %}, {% set x = 1 %}): a wildcard
                reads: dict[str, None] = {}
                _jinja_reads(found["tag"], reads, set())
                slots.append(Placeholder(found.group(0), found.group(0), block=True, uses=tuple(reads)))
                literals.append("")
    if open_block:
        raise TemplateError(f"the Jinja block {{% {open_block[-1]} %}} is never closed")
    rest = text[position:]
    literals[-1] += rest.lstrip() if trim_next else rest
    if literals[-1].endswith("\n"):  # Jinja drops a single final newline (keep_trailing_newline=False)
        literals[-1] = literals[-1][:-1]
    return literals, slots


def _jinja_name(expression: str) -> str:
    return re.sub(r"\s+", "", expression)


_JINJA_STRINGS = re.compile(r"'[^']*'|\"[^\"]*\"")
_JINJA_NAME = re.compile(r"(?<![\w.])([^\W\d]\w*)(\s*\()?")
_JINJA_TARGETS = re.compile(r"^\s*(?:for\s+(?P<loop>[\w\s,]+?)\s+in\b|set\s+(?P<set>[\w\s,]+?)\s*(?:=|$))")
#: Words of Jinja's syntax and its globals: never a variable the program fills.
_JINJA_WORDS = frozenset(
    "in not and or is if else elif endif for endfor set endset with endwith without context import as from "
    "recursive block endblock macro endmacro call endcall filter endfilter raw endraw include extends ignore "
    "missing autoescape endautoescape trans endtrans pluralize do continue break true false none True False None "
    "loop super self varargs kwargs caller range dict lipsum cycler joiner namespace".split()
)


def _jinja_reads(code: str, uses: dict[str, None], local: set[str]) -> None:
    """Note the variables a Jinja expression or tag reads (filters, tests, calls, locals left out)."""
    targets = _JINJA_TARGETS.match(code)
    if targets is not None:
        local.update(re.findall(r"\w+", targets["loop"] or targets["set"] or ""))
        code = code[targets.end() :] if targets["loop"] else code[targets.end() :]
    code = _JINJA_STRINGS.sub(" ", code)
    for found in _JINJA_NAME.finditer(code):
        name = found.group(1)
        before = code[: found.start()].rstrip()
        if (
            found.group(2)
            or name in _JINJA_WORDS
            or name in local
            or before.endswith("|")
            or re.search(r"\bis(?:\s+not)?$", before)
        ):
            continue
        uses.setdefault(name, None)


def _jinja_nesting(tag: str, open_block: list[str]) -> None:
    words = tag.split()
    keyword = words[0] if words else ""
    if keyword in _JINJA_BLOCKS and not (keyword == "set" and "=" in tag):
        open_block.append(keyword)
    elif keyword.startswith("end") and keyword[3:] in _JINJA_BLOCKS:
        if not open_block or open_block[-1] != keyword[3:]:
            raise TemplateError(f"{{% {keyword} %}} closes no open {keyword[3:]!r} block")
        open_block.pop()


_PARSERS = {"format": _parse_format, "jinja": _parse_jinja, "printf": _parse_printf, "dollar": _parse_dollar}
