"""Provenance: which step produced this value?

A tracer sees a step start with some inputs and must say where each input came from: an edge of
the OPTO graph is exactly that answer. Frameworks rarely record it, so every tracer registers
what each step *produced* and looks up what the next step *consumed*. This module is the one
index that does it, with one set of rules, used by `opto_core.kernel.trace` and every adapter.

A produced value is registered with the id of the node that produced it, in up to four ways:

- **identity**: the very object (a list, a message, a document). Strings and numbers are not
  followed by identity by default (Python shares equal literals, so their identity says little),
  and cannot carry anything; `ProvenanceIndex.tag` returns a *tagged* copy instead (a tiny
  subclass that compares, hashes and prints like the plain value) carrying the node id, found
  wherever it travels as long as it is not rebuilt. A tracer that must follow a string it cannot
  replace (an input the caller passed on) registers it with ``identity=True``.
- **keys**: ids the framework gives (a message id, a ``tool_call_id``, a run id): any hashable
  the adapter chooses, e.g. ``("message", msg.id)``.
- **exact text**: the value's text (its own, if it is a ``str``; for other objects the text the
  index's ``text_of`` gives, e.g. a message's content).
- **contained text**: a produced text found inside a longer consumed text (an f-string, a prompt
  assembled from earlier answers).

Looking a consumed value up tries these in that order and stops at the first that answers:
**identity (and tags) beat keys, keys beat exact text, exact text beats containment**.
Ties inside one way:

- identity and exact text: the **most recent** producer wins (a step that returns its input
  unchanged is the latest step the value went through, and the graph must pass through it);
- keys: the **first** producer wins (a framework mints an id once; later steps that carry the
  message along only relay it). A key that names a *slot* rather than a minted id (a speaker's
  latest message with a given text, the latest request for a set of tool calls) is registered
  with ``register_key(key, node, latest=True)``: then the most recent producer wins;
- containment: the **longest** contained texts win, the more recent first on equal length; a
  match lying inside an already chosen longer match is dropped (the longer one explains it), and
  at most `MAX_CONTAINED` producers are returned.

Texts shorter than `MIN_TEXT` characters (after stripping whitespace) are never matched as text,
neither exactly nor contained: "yes", "3" or "ok" come up by coincidence far too often.
``bool``, ``None`` and untagged numbers are never matched at all. A container (dict, list, tuple)
is registered together with its direct items, and a consumed container that is not known by
identity is traced through its direct items (``depth=0`` on `register`, `tag` and the lookups
follows the container alone).

A tracer that hands every produced value on itself (plain Python: tagged values and the very
objects) builds its index with ``ProvenanceIndex(text=False)``: it follows identity, tags and keys
only, and never links two values because their texts are equal; a value rebuilt outside a step
is then a constant, as documented for `opto_core.kernel.trace`.

Cost: registering and exact lookups are dict operations; only containment scans, and it scans at
most the `CONTAIN_SCAN` most recent distinct texts. One index serves one run and is thread-safe.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Hashable, Iterable, NamedTuple

#: Shortest text (after ``strip()``) matched by value, exactly or contained. Shorter texts
#: ("yes", "42", "ok") coincide too often to be evidence of data flow.
MIN_TEXT = 4
#: At most this many producers are returned for one value found by containment or through items.
MAX_CONTAINED = 5
#: Containment looks at no more than this many of the most recently produced distinct texts.
CONTAIN_SCAN = 512

#: How a value was found (``Match.how``), strongest first.
IDENTITY, KEY, VALUE, CONTAINS = "identity", "key", "value", "contains"

_TOKENS = itertools.count(1)


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


class Match(NamedTuple):
    """One producer of a consumed value: its node id and how it was found (`IDENTITY`, `KEY`, ...)."""

    node: str
    how: str


_NUMBERS = (bool, int, float)
_PLAIN_NUMBERS = frozenset(_NUMBERS)


def _is_number(value: Any) -> bool:
    return value is None or isinstance(value, _NUMBERS)


# ----- the index ------------------------------------------------------------------------------
class ProvenanceIndex:
    """Produced values by node id, and the lookup of a consumed value's producers (one per run).

    ``text_of`` gives the text of objects that are not ``str`` (a chat message's content, a
    document's page content); return ``None`` for objects that have no text. ``text=False``
    turns the two text rules off (identity, tags and keys only).
    """

    def __init__(self, text_of: Callable[[Any], str | None] | None = None, *, text: bool = True) -> None:
        self.token = next(_TOKENS)  # tagged values from another index are not ours
        self.text_of = text_of
        self.match_text = text  # False: identity, tags and keys only (see the module doc)
        self._identity: dict[int, tuple[str, Any]] = {}  # id(obj) -> (node, obj): the reference keeps ids unique
        self._keys: dict[Hashable, str] = {}
        self._texts: dict[str, str] = {}  # text -> node, insertion order = recency
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

    def register(self, value: Any, node_id: str, *, text: str | None = None, keys: Iterable[Hashable] = (),
                 depth: int = 1, identity: bool = False) -> None:
        """Remember ``value`` (and its direct items, to ``depth`` levels) as produced by ``node_id``.

        ``text`` overrides the value's text; ``keys`` are framework ids that name it;
        ``identity=True`` also follows a ``str`` value itself by identity (see the module doc).
        """
        with self._lock:
            for key in keys:
                if key is not None:
                    self._keys.setdefault(key, node_id)  # first producer wins
            if identity and isinstance(value, str) and type(value) not in _PLAIN:
                self._identity[id(value)] = (node_id, value)
            self._register(value, node_id, text, depth)

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
            for item in (value.values() if isinstance(value, dict) else value):
                self._register(item, node_id, None, depth - 1)

    def _text(self, value: Any) -> str | None:
        if type(value) is str:
            return value
        if isinstance(value, str):
            return str.__str__(value)
        if self.text_of is not None and not isinstance(value, (dict, list, tuple)):
            return self.text_of(value)
        return None

    # ----- looking up -----------------------------------------------------------------------------
    def find(self, value: Any, *, text: str | None = None, keys: Iterable[Hashable] = (),
             depth: int = 1) -> Match | None:
        """The strongest producer of ``value``, or ``None`` if no rule finds one."""
        found = self.find_all(value, text=text, keys=keys, limit=1, depth=depth)
        return found[0] if found else None

    def node_of(self, value: Any, *, text: str | None = None, keys: Iterable[Hashable] = (),
                depth: int = 1) -> str | None:
        """The node id of `find`, or ``None``."""
        if getattr(value, "_opto_run", None) == self.token:  # a tag of ours: nothing beats it
            return str(value._opto_node)
        if text is None and not keys and type(value) in _PLAIN_NUMBERS:  # never matched: skip the lock
            return None
        if value is None and text is None:  # framework ids only: dict reads (atomic), no lock
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

    def find_all(self, value: Any, *, text: str | None = None, keys: Iterable[Hashable] = (),
                 limit: int = MAX_CONTAINED, depth: int = 1) -> list[Match]:
        """Every producer of ``value`` under the strongest rule that finds one (see the module doc).

        Identity, a key or exact text give one producer; containment and a container's items may
        give several (at most ``limit``).
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
        if text is None and not _is_number(value) and self.match_text:
            text = self._text(value)
        if text is not None and self.match_text and len(text.strip()) >= MIN_TEXT:
            node = self._texts.get(text)
            if node is not None:
                return [Match(node, VALUE)]
            return self._contained(text, limit)
        if depth > 0 and isinstance(value, (dict, list, tuple)):
            found: list[Match] = []
            for item in (value.values() if isinstance(value, dict) else value):
                for match in self._find(item, None, (), limit, depth - 1):
                    if all(m.node != match.node for m in found):
                        found.append(match)
                if len(found) >= limit:
                    break
            return found[:limit]
        return []

    def _contained(self, text: str, limit: int) -> list[Match]:
        candidates: list[tuple[int, int, str, str]] = []
        for rank, (produced, node) in enumerate(itertools.islice(reversed(self._texts.items()), CONTAIN_SCAN)):
            if len(produced) < len(text) and len(produced.strip()) >= MIN_TEXT and produced in text:
                candidates.append((-len(produced), rank, produced, node))
        candidates.sort()
        chosen: list[tuple[str, str]] = []
        for _, _, produced, node in candidates:
            if any(produced in longer for longer, _ in chosen) or any(n == node for _, n in chosen):
                continue
            chosen.append((produced, node))
            if len(chosen) >= limit:
                break
        return [Match(node, CONTAINS) for _, node in chosen]

    def __len__(self) -> int:
        return len(self._identity) + len(self._keys) + len(self._texts)
