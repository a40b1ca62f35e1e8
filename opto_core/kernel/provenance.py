"""Provenance: which step produced this value?

A tracer sees a step start with some inputs and must say where each input came from: an edge of
the OPTO graph is exactly that answer. Frameworks rarely record it, so every tracer registers
what each step *produced* and looks up what the next step *consumed*. This module is the one
index that does it, with one set of rules, used by `opto_core.kernel.trace`, the conversation
builder, the gateway and every adapter. No other module matches values to producers.

A produced value is registered with the id of the node that produced it, in up to seven ways:

- **identity**: the very object (a list, a message, a document). Strings and numbers are not
  followed by identity by default (Python shares equal literals, so their identity says little),
  and cannot carry anything; `ProvenanceIndex.tag` returns a *tagged* copy instead (a tiny
  subclass that compares, hashes and prints like the plain value) carrying the node id, found
  wherever it travels as long as it is not rebuilt. A tracer that must follow a string it cannot
  replace (an input the caller passed on) registers it with ``identity=True``.
- **keys**: ids the framework gives (a message id, a ``tool_call_id``, a run id): any hashable
  the adapter chooses, e.g. ``("message", msg.id)``.
- **exact text** (``value``): the value's text (its own, if it is a ``str``; for other objects the
  text the index's ``text_of`` gives, e.g. a message's content).
- **typed** (``register(value, node, typed=True)``): a non-text value (a number, bool, ``None``,
  list, dict, pydantic model, dataclass) is known by the texts frameworks actually send for it:
  ``str``, ``repr``, JSON (``json.dumps`` with the default separators and compact, with
  ``ensure_ascii`` on and off, and indented by 2), a pydantic model's ``model_dump_json``, plus the
  renderings an adapter gives: ``renderings=`` for this value (DSPy's formatting of a field) or the
  index's ``renderers`` hook (called with every typed value).
- **template** (`register_template`): a text with placeholders (a template parameter) is known by
  every text it produces: its literal parts in order, each placeholder a wildcard
  (`opto_core.kernel.templates.Template.match`). A template with fewer than `MIN_TEXT` literal
  characters (``"{x}"``) would match anything and is registered as exact text only.
- **contained text**: a produced text (or typed rendering, or template output) found inside a
  longer consumed text (an f-string, a prompt assembled from earlier answers).
- **partial** (``register(text, node, partial=True)``; templates always): lines of the text (a
  template's literal parts) of at least `PARTIAL_MIN` characters found verbatim in the consumed
  text, for a value the program edited before use (cut, concatenated with other text, one line
  changed).

Looking a consumed value up tries these in that order and stops at the first that answers:
**identity (and tags) > keys > exact text > exact typed rendering > template > contained >
partial**. `Match.how` names the rule that found each producer (`IDENTITY`, `KEY`, `VALUE`,
`TYPED`, `TEMPLATE`, `CONTAINS`, `PARTIAL`); a tracer copies it onto the edge (`Match.edge`,
``Edge.match``), so the graph says that a prompt was linked as a template's output. Ties:

- identity, exact text and exact typed renderings: the **most recent** producer wins (a step that
  returns its input unchanged is the latest step the value went through, and the graph must pass
  through it);
- keys: the **first** producer wins (a framework mints an id once; later steps that carry the
  message along only relay it). A key that names a *slot* rather than a minted id (a speaker's
  latest message with a given text, the latest request for a set of tool calls) is registered
  with ``register_key(key, node, latest=True)``: then the most recent producer wins;
- template: the template that matches the **whole** consumed text with the **most literal
  characters** wins (the most specific), the more recent first on equal count; one template is
  returned, followed by the producers of the texts its placeholders bound (each looked up by
  exact text, exact typed rendering, then containment): the template explains the constant part,
  the values keep their own edges. Its `Match.detail` is the `TemplateMatch` (values and spans);
- containment: the **longest** evidence wins (a contained text's length, a contained template
  output's literal characters), the more recent first on equal length; a match lying inside an
  already chosen longer match is dropped (the longer one explains it), and at most
  `MAX_CONTAINED` producers are returned. A template is found inside a longer text with
  `Template.search` (its leftmost output);
- partial: the **most characters** of found fragments wins, the more recent first on equal
  count; `Match.detail` lists the fragments found.

Coincidence guards. Texts shorter than `MIN_TEXT` characters (after stripping whitespace) are
never matched as text, neither exactly nor contained: "yes", "3" or "ok" come up by coincidence
far too often. ``bool``, ``None`` and numbers are never matched by text unless registered as
typed, and then: a ``bool`` only as the whole consumed value or text (``"True"``, ``"true"``), a
``None`` only as the whole consumed text (``"None"``, ``"null"``; a consumed ``None`` value is no
evidence), neither inside a longer text; a number as the whole consumed value or text, or inside a
longer text only as a whole token (not part of a longer number or word) of at least `MIN_TEXT`
characters (``3.75`` yes, ``3`` or ``42`` never). Other typed renderings follow the text rules.
A container (dict, list, tuple) is registered together with its direct items, and a consumed
container that is not known by identity is traced through its typed renderings, then its direct
items (``depth=0`` on `register`, `tag` and the lookups follows the container alone).

A tracer that hands every produced value on itself (plain Python: tagged values and the very
objects) builds its index with ``ProvenanceIndex(text=False)``: it follows identity, tags and keys
only, and never links two values because their texts are equal; a value rebuilt outside a step
is then a constant, as documented for `opto_core.kernel.trace`.

Cost: registering and exact lookups are dict operations; the template, containment and partial
rules scan at most the `CONTAIN_SCAN` most recent registrations of their kind, each in time
linear in the consumed text (templates match without backtracking). One index serves one run and
is thread-safe.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from typing import Any, Callable, Hashable, Iterable, NamedTuple

from opto_core.kernel.graph import (
    MATCH_CONTAINS,
    MATCH_IDENTITY,
    MATCH_KEY,
    MATCH_PARTIAL,
    MATCH_TEMPLATE,
    MATCH_TYPED,
    MATCH_VALUE,
    Edge,
)
from opto_core.kernel.templates import Template, literal_fragments

#: Shortest text (after ``strip()``) matched by value, exactly or contained. Shorter texts
#: ("yes", "42", "ok") coincide too often to be evidence of data flow.
MIN_TEXT = 4
#: At most this many producers are returned for one value found by containment or through items.
MAX_CONTAINED = 5
#: Containment, templates and partial matching look at no more than this many of the most recent
#: registrations of their kind.
CONTAIN_SCAN = 512
#: Shortest literal fragment (a line, stripped) that partial matching looks for: shorter lines
#: ("Answer:", "Be brief.") recur in unrelated prompts.
PARTIAL_MIN = 32
#: At most this many fragments (the longest) of one value are looked for.
MAX_FRAGMENTS = 32

#: How a value was found (``Match.how``), strongest first (the vocabulary of ``Edge.match``).
IDENTITY, KEY, VALUE, TYPED = MATCH_IDENTITY, MATCH_KEY, MATCH_VALUE, MATCH_TYPED
TEMPLATE, CONTAINS, PARTIAL = MATCH_TEMPLATE, MATCH_CONTAINS, MATCH_PARTIAL

_TOKENS = itertools.count(1)

Renderer = Callable[[Any], "Iterable[str] | None"]


# ----- tagged primitives ---------------------------------------------------------------------
class TaggedStr(str):
    """A ``str`` that remembers the node that produced it (and which index tagged it)."""

    _opto_node: str
    _opto_run: int


class TaggedInt(int):
    """An ``int`` that remembers the node that produced it."""

    _opto_node: str
    _opto_run: int


class TaggedFloat(float):
    """A ``float`` that remembers the node that produced it."""

    _opto_node: str
    _opto_run: int


_TAGGED: dict[type, type] = {str: TaggedStr, int: TaggedInt, float: TaggedFloat}
_PLAIN: dict[type, type] = {TaggedStr: str, TaggedInt: int, TaggedFloat: float}


def untag(value: Any) -> Any:
    """The plain value behind a tagged one (a `TaggedStr` becomes a ``str``); others unchanged."""
    plain = _PLAIN.get(type(value))
    return plain(value) if plain is not None else value


def tagged_node(value: Any) -> str | None:
    """The node id a tagged value carries, whichever index tagged it (``None`` for plain values)."""
    return getattr(value, "_opto_node", None) if type(value) in _PLAIN else None


class _Found(NamedTuple):
    node: str
    how: str


class Match(_Found):
    """One producer of a consumed value: ``(node, how)``, how being the rule that found it (`IDENTITY`,
    `KEY`, ...). ``detail`` (not part of the pair, nor of equality): for a template, the `TemplateMatch`
    (what each placeholder bound); for a partial match, the fragments found; else ``None``."""

    detail: Any

    def __new__(cls, node: str, how: str, detail: Any = None) -> Match:
        match = super().__new__(cls, node, how)
        match.detail = detail
        return match

    def edge(self, arg: str = "", via: str = "data") -> Edge:
        """The graph edge from this producer, saying how it was found (``Edge.match``)."""
        return Edge(self.node, arg, via, self.how)


_NUMBERS = (bool, int, float)
_PLAIN_NUMBERS = frozenset(_NUMBERS)


def _is_number(value: Any) -> bool:
    return value is None or isinstance(value, _NUMBERS)


# ----- typed renderings ----------------------------------------------------------------------
#: Kinds of typed renderings, for the coincidence guards (see the module doc).
_FLAG, _NUMBER, _OTHER = "flag", "number", "other"


def renderings(value: Any) -> list[str]:
    """The texts frameworks send for a non-text value: ``str``, ``repr``, and JSON in its usual forms
    (default separators and compact, ``ensure_ascii`` on and off, indented by 2); a pydantic model's
    ``model_dump_json`` and JSON of its ``model_dump``; JSON of a dataclass's fields. No duplicates."""
    found: dict[str, None] = {}

    def add(text: Any) -> None:
        if isinstance(text, str) and text:
            found.setdefault(text, None)

    data: Any = value
    if hasattr(value, "model_dump_json") and hasattr(value, "model_dump"):  # a pydantic model
        dumps: list[tuple[str, dict[str, Any]]] = [
            ("model_dump_json", {}),
            ("model_dump_json", {"indent": 2}),
            ("model_dump", {"mode": "json"}),
        ]
        for method, options in dumps:
            try:
                result = getattr(value, method)(**options)
            except Exception:  # a model that cannot dump: its str and repr are still there
                continue
            if isinstance(result, str):
                add(result)
            else:
                data = result
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            data = dataclasses.asdict(value)
        except Exception:
            data = None
    add(_safe(str, value))
    add(_safe(repr, value))
    if value is None or isinstance(value, (bool, int, float, str, list, tuple, dict)) or data is not value:
        for options in (
            {},
            {"ensure_ascii": False},
            {"separators": (",", ":")},
            {"separators": (",", ":"), "ensure_ascii": False},
            {"indent": 2},
            {"indent": 2, "ensure_ascii": False},
        ):
            try:
                add(json.dumps(data, **options))
            except (TypeError, ValueError, RecursionError):
                break
    return [text for text in found if not (text.startswith("<") and " object at 0x" in text)]


def _safe(function: Callable[[Any], str], value: Any) -> str | None:
    try:
        return function(value)
    except Exception:  # a broken __str__/__repr__ must not break tracing
        return None


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return _FLAG
    return _NUMBER if isinstance(value, (int, float)) else _OTHER


def _whole_token(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is not part of a longer number or word."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before in "_.-":  # a sign or a leading digit makes it another number
        return False
    return not (after.isalnum() or after == "_" or (after == "." and end + 1 < len(text) and text[end + 1].isdigit()))


# ----- the index ------------------------------------------------------------------------------
class ProvenanceIndex:
    """Produced values by node id, and the lookup of a consumed value's producers (one per run).

    ``text_of`` gives the text of objects that are not ``str`` (a chat message's content, a
    document's page content); return ``None`` for objects that have no text. ``text=False``
    turns the text rules off (identity, tags and keys only). ``renderers`` are the adapter's
    renderings of typed values (each called with the value, returning texts or ``None``).
    """

    def __init__(
        self,
        text_of: Callable[[Any], str | None] | None = None,
        *,
        text: bool = True,
        renderers: Iterable[Renderer] = (),
    ) -> None:
        self.token = next(_TOKENS)  # tagged values from another index are not ours
        self.text_of = text_of
        self.match_text = text  # False: identity, tags and keys only (see the module doc)
        self.renderers: list[Renderer] = list(renderers)
        self._identity: dict[int, tuple[str, Any]] = {}  # id(obj) -> (node, obj): the reference keeps ids unique
        self._keys: dict[Hashable, str] = {}
        self._texts: dict[str, str] = {}  # text -> node, insertion order = recency
        self._typed: dict[str, tuple[str, str]] = {}  # rendering -> (node, kind), insertion order = recency
        self._templates: dict[str, tuple[Template, str]] = {}  # template text -> (template, node)
        self._partial: dict[str, tuple[tuple[str, ...], str]] = {}  # text -> (its fragments, node)
        self._lock = threading.Lock()

    # ----- registering ---------------------------------------------------------------------------
    def tag(self, value: Any, node_id: str, *, depth: int = 1) -> Any:
        """Register ``value`` as produced by ``node_id``; a ``str``/``int``/``float`` comes back tagged.

        Pass the returned value on (instead of ``value``) so that the next step finds its producer
        by identity. ``bool`` and ``None`` cannot be tagged and come back unchanged.
        """
        plain = _PLAIN.get(type(value), type(value))
        kind = _TAGGED.get(plain)
        if kind is None or self.match_text:  # without text rules a tag is all a primitive needs
            self.register(value, node_id, depth=depth)
        if kind is None or isinstance(value, bool):
            return value
        tagged = kind(value)
        tagged._opto_node = node_id
        tagged._opto_run = self.token
        return tagged

    def register(
        self,
        value: Any,
        node_id: str,
        *,
        text: str | None = None,
        keys: Iterable[Hashable] = (),
        depth: int = 1,
        identity: bool = False,
        typed: bool = False,
        renderings: Iterable[str] = (),
        partial: bool = False,
    ) -> None:
        """Remember ``value`` (and its direct items, to ``depth`` levels) as produced by ``node_id``.

        ``text`` overrides the value's text; ``keys`` are framework ids that name it;
        ``identity=True`` also follows a ``str`` value itself by identity; ``typed=True`` knows a
        non-text value by its renderings (plus ``renderings``, e.g. the adapter's formatting of the
        field); ``partial=True`` lets long lines of its text link as a partial match (see the
        module doc).
        """
        extra = list(renderings)
        with self._lock:
            for key in keys:
                if key is not None:
                    self._keys.setdefault(key, node_id)  # first producer wins
            if identity and isinstance(value, str) and type(value) not in _PLAIN:
                self._identity[id(value)] = (node_id, value)
            self._register(value, node_id, text, depth)
            if not self.match_text:
                return
            if typed or extra:
                self._register_typed(value, node_id, extra if not typed else [*self._renderings(value), *extra])
            if partial:
                own = text if text is not None else self._text(value)
                if own is not None:
                    self._register_partial(own, literal_fragments([own], PARTIAL_MIN), node_id)

    def register_template(self, template: str | Template, node_id: str, *, style: str | None = None) -> Template | None:
        """Remember a text with placeholders (a template parameter's value) as produced by ``node_id``.

        Its outputs are then found by the template rule, its long literal lines by the partial rule,
        and its own text exactly. Returns the parsed template, or ``None`` when the text has no
        placeholder or too few literal characters to be evidence (then it is registered as text only).
        """
        parsed = template if isinstance(template, Template) else Template.parse(template, style)
        source = parsed.text if parsed is not None else template
        with self._lock:
            if isinstance(source, str):
                self._register(source, node_id, None, 0)
            if parsed is None or not self.match_text:
                return None
            self._register_partial(parsed.text, tuple(parsed.fragments(PARTIAL_MIN)), node_id)
            if len("".join(parsed.literals).strip()) < MIN_TEXT:
                return None
            self._templates.pop(parsed.text, None)  # most recent wins: move it to the end
            self._templates[parsed.text] = (parsed, node_id)
        return parsed

    def register_parameter(self, parameter: Any, node_id: str, **options: Any) -> None:
        """Remember a `Parameter`'s value as produced by its node, by the rules its kind calls for:
        a template parameter as a template (its *current* value, read in its original's style: the
        program renders what it was given last), a text as text (with partial matching), any other
        value as typed. ``options`` go to `register` (``renderings=``, ``keys=``...)."""
        template = getattr(parameter, "template_model", None)
        if template is not None:
            # a value set without validation that does not parse: the original is all we can read
            self.register_template(parameter.current_template() or template, node_id)
            if options:
                self.register(parameter.value, node_id, **options)
        elif isinstance(parameter.value, str):
            self.register(parameter.value, node_id, partial=True, **options)
        else:
            self.register(parameter.value, node_id, typed=True, **options)

    def register_key(self, key: Hashable, node_id: str, *, latest: bool = False) -> None:
        """Remember a framework id (``("tool_call", "call_1")``) as minted by ``node_id``; the first wins.

        ``latest=True``: the key names a slot that later producers take over (see the module doc).
        """
        with self._lock:
            if latest:
                self._keys[key] = node_id
            else:
                self._keys.setdefault(key, node_id)

    def _register(self, value: Any, node_id: str, text: str | None, depth: int) -> None:
        if _is_number(value) and text is None:
            return
        if text is None and self.match_text:
            text = self._text(value)
        if text is not None and self.match_text and len(text.strip()) >= MIN_TEXT:
            self._texts.pop(text, None)  # most recent wins: move it to the end
            self._texts[text] = node_id
        if not _is_number(value) and not isinstance(value, str):
            self._identity[id(value)] = (node_id, value)
        if depth > 0 and isinstance(value, (dict, list, tuple)):
            for item in value.values() if isinstance(value, dict) else value:
                self._register(item, node_id, None, depth - 1)

    def _renderings(self, value: Any) -> list[str]:
        texts = renderings(untag(value))
        for renderer in self.renderers:
            try:
                texts.extend(renderer(value) or ())
            except Exception:  # an adapter's renderer that fails on this value renders nothing
                continue
        return texts

    def _register_typed(self, value: Any, node_id: str, texts: Iterable[str]) -> None:
        kind = _kind(untag(value))
        for rendering in texts:
            if isinstance(rendering, str) and rendering.strip():
                self._typed.pop(rendering, None)
                self._typed[rendering] = (node_id, kind)

    def _register_partial(self, text: str, fragments: Iterable[str], node_id: str) -> None:
        pieces = tuple(fragments)[:MAX_FRAGMENTS]
        if pieces:
            self._partial.pop(text, None)
            self._partial[text] = (pieces, node_id)

    def _text(self, value: Any) -> str | None:
        if type(value) is str:
            return value
        if isinstance(value, str):
            return str.__str__(value)
        if self.text_of is not None and not isinstance(value, (dict, list, tuple)):
            return self.text_of(value)
        return None

    # ----- looking up -----------------------------------------------------------------------------
    def find(
        self, value: Any, *, text: str | None = None, keys: Iterable[Hashable] = (), depth: int = 1
    ) -> Match | None:
        """The strongest producer of ``value``, or ``None`` if no rule finds one."""
        found = self.find_all(value, text=text, keys=keys, limit=1, depth=depth)
        return found[0] if found else None

    def node_of(
        self, value: Any, *, text: str | None = None, keys: Iterable[Hashable] = (), depth: int = 1
    ) -> str | None:
        """The node id of `find`, or ``None``."""
        if getattr(value, "_opto_run", None) == self.token:  # a tag of ours: nothing beats it
            return str(value._opto_node)
        if text is None and not keys and type(value) in _PLAIN_NUMBERS and not self._typed:  # never matched
            return None
        if value is None and text is None and not self._typed:  # framework ids only: dict reads (atomic), no lock
            get = self._keys.get
            for key in keys:
                node = get(key)
                if node is not None:
                    return node
            return None
        match = self.find(value, text=text, keys=keys, depth=depth)
        return match.node if match is not None else None

    def by_key(self, key: Hashable) -> str | None:
        """The producer one framework id names (`node_of` with a single key; for hot loops)."""
        return self._keys.get(key)

    def has_key(self, key: Hashable) -> bool:
        """Whether a framework id is registered (to credit ids no step minted, e.g. an input's)."""
        return key in self._keys

    def find_all(
        self,
        value: Any,
        *,
        text: str | None = None,
        keys: Iterable[Hashable] = (),
        limit: int = MAX_CONTAINED,
        depth: int = 1,
    ) -> list[Match]:
        """Every producer of ``value`` under the strongest rule that finds one (see the module doc).

        Identity, a key, exact text or an exact typed rendering give one producer; a template gives
        the template and the producers of its values; containment, partial matches and a
        container's items may give several (at most ``limit``).
        """
        if getattr(value, "_opto_run", None) == self.token:
            return [Match(value._opto_node, IDENTITY)]
        with self._lock:
            return self._find(value, text, keys, limit, depth)

    def _find(self, value: Any, text: str | None, keys: Iterable[Hashable], limit: int, depth: int) -> list[Match]:
        if getattr(value, "_opto_run", None) == self.token:
            return [Match(value._opto_node, IDENTITY)]
        if not _is_number(value):
            entry = self._identity.get(id(value))
            if entry is not None and entry[1] is value:
                return [Match(entry[0], IDENTITY)]
        for key in keys:
            node = self._keys.get(key) if key is not None else None
            if node is not None:
                return [Match(node, KEY)]
        if not self.match_text:
            return []
        if text is None and not _is_number(value):
            text = self._text(value)
        if text is not None:
            return self._find_text(text, limit)
        if self._typed and value is not None and not isinstance(value, str):  # a number or a rebuilt container
            for rendering in self._renderings(value):
                entry = self._typed.get(rendering)
                if entry is not None:
                    return [Match(entry[0], TYPED)]
        if depth > 0 and isinstance(value, (dict, list, tuple)):
            found: list[Match] = []
            for item in value.values() if isinstance(value, dict) else value:
                for match in self._find(item, None, (), limit, depth - 1):
                    if all(m.node != match.node for m in found):
                        found.append(match)
                if len(found) >= limit:
                    break
            return found[:limit]
        return []

    def _find_text(self, text: str, limit: int) -> list[Match]:
        """The text rules, strongest first: exact, typed, template, contained, partial."""
        found = self._exact(text)
        if found is not None:
            return [found]
        template = self._template(text)
        if template is not None:
            matches = [template]
            for bound in template.detail.values.values():  # the values keep their own producers
                exact = self._exact(bound)
                for match in [exact] if exact is not None else self._contained(bound, limit):
                    if all(m.node != match.node for m in matches):
                        matches.append(match)
            return matches[:limit]
        return self._contained(text, limit) or self._partially(text, limit)

    def _exact(self, text: str) -> Match | None:
        stripped = text.strip()
        if len(stripped) >= MIN_TEXT:
            node = self._texts.get(text)
            if node is not None:
                return Match(node, VALUE)
        if self._typed:
            entry = self._typed.get(text) or self._typed.get(stripped)
            if entry is not None:
                return Match(entry[0], TYPED)
        return None

    def _template(self, text: str) -> Match | None:
        best: tuple[int, int, Match] | None = None
        for rank, (template, node) in enumerate(itertools.islice(reversed(self._templates.values()), CONTAIN_SCAN)):
            if best is not None and template.literal_chars <= -best[0]:
                continue
            bound = template.match(text)
            if bound is not None:
                best = (-template.literal_chars, rank, Match(node, TEMPLATE, bound))
        return best[2] if best is not None else None

    def _contained(self, text: str, limit: int) -> list[Match]:
        if len(text.strip()) < MIN_TEXT:
            return []
        # (-evidence length, recency rank, evidence texts, match)
        candidates: list[tuple[int, int, tuple[str, ...], Match]] = []
        for rank, (produced, node) in enumerate(itertools.islice(reversed(self._texts.items()), CONTAIN_SCAN)):
            if len(produced) < len(text) and len(produced.strip()) >= MIN_TEXT and produced in text:
                candidates.append((-len(produced), rank, (produced,), Match(node, CONTAINS)))
        for rank, (rendering, (node, kind)) in enumerate(itertools.islice(reversed(self._typed.items()), CONTAIN_SCAN)):
            if kind == _FLAG or len(rendering) >= len(text) or len(rendering.strip()) < MIN_TEXT:
                continue
            at = text.find(rendering)
            while kind == _NUMBER and at >= 0 and not _whole_token(text, at, at + len(rendering)):
                at = text.find(rendering, at + 1)
            if at >= 0:
                candidates.append((-len(rendering), rank, (rendering,), Match(node, TYPED)))
        for rank, (template, node) in enumerate(itertools.islice(reversed(self._templates.values()), CONTAIN_SCAN)):
            bound = template.search(text)
            if bound is not None and bound.matched != text:
                candidates.append(
                    (
                        -template.literal_chars,
                        rank,
                        tuple(piece for piece in template.literals if piece),
                        Match(node, CONTAINS, bound),
                    )
                )
        candidates.sort(key=lambda c: (c[0], c[1]))
        chosen: list[tuple[tuple[str, ...], Match]] = []
        for _, _, evidence, match in candidates:
            if any(all(any(piece in longer for longer in texts) for piece in evidence) for texts, _ in chosen) or any(
                m.node == match.node for _, m in chosen
            ):
                continue
            chosen.append((evidence, match))
            if len(chosen) >= limit:
                break
        return [match for _, match in chosen]

    def _partially(self, text: str, limit: int) -> list[Match]:
        candidates: list[tuple[int, int, Match]] = []
        for rank, (pieces, node) in enumerate(itertools.islice(reversed(self._partial.values()), CONTAIN_SCAN)):
            found = tuple(piece for piece in pieces if piece in text)
            if found:
                candidates.append((-sum(len(piece) for piece in found), rank, Match(node, PARTIAL, found)))
        candidates.sort(key=lambda c: (c[0], c[1]))
        chosen: list[Match] = []
        for _, _, match in candidates:
            if all(m.node != match.node for m in chosen):
                chosen.append(match)
            if len(chosen) >= limit:
                break
        return chosen

    def __len__(self) -> int:
        return len(self._identity) + len(self._keys) + len(self._texts) + len(self._typed) + len(self._templates)
