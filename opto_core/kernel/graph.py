"""The OPTO graph: one run of a workflow as a DAG of values.

A workflow run is recorded the way micrograd records arithmetic: every value that matters
becomes a `Node`, and every node remembers the nodes it was computed from (its *parents*,
each with the argument name it fed). Five kinds of node exist:

- ``parameter``: a trainable (or frozen) value such as a prompt or a tool's code;
- ``input``: a value from outside the workflow (an example's field), never changed;
- ``op``: one step that produced a value (an LLM call, a tool call, a parser, ...);
- ``exception``: an op that raised; its value is the error type and message;
- ``output``: marks an op's value as one of the workflow's outputs.

Graphs from every adapter share this one type and its JSON form (``opto-graph/1``,
documented in ``docs/graph-format.md``), which round-trips exactly:
``Graph.from_json(g.to_json()) == g``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

from opto_core.kernel.bounds import MAX_GRAPH_TEXT, MAX_JSON_DEPTH, bound_text, json_depth

FORMAT = "opto-graph/1"
NODE_KINDS: tuple[str, ...] = ("parameter", "input", "op", "exception", "output")
NodeKind = Literal["parameter", "input", "op", "exception", "output"]

#: How an edge was found (`Edge.via`); `backward` follows the kinds it is given (all by default).
VIA_DATA = "data"  # real data flow: the parent's value went into this node
VIA_CALL_TREE = "call_tree"  # the framework hid the data flow: parent run -> child run
VIA_CONTEXT = "context"  # the value was only in a prompt's context, not what produced this node
VIA_CONTROL = "control"  # it chose what ran next (a router, a speaker selection)
EDGE_KINDS: tuple[str, ...] = (VIA_DATA, VIA_CALL_TREE, VIA_CONTEXT, VIA_CONTROL)

#: Values whose repr is longer than this are cut in the middle when they are not JSON.
REPR_LIMIT = 4000


#: The graph-level metadata every adapter writes (``graph.meta[KEY]``), documented in docs/graph-format.md.
META_ADAPTER = "adapter"  # the module that made the graph: "opto_adapters.langchain"
META_FRAMEWORK = "framework"  # the framework's distribution name: "langchain-core", "dspy", "python"
META_FRAMEWORK_VERSION = "framework_version"
META_RUN_ID = "run_id"  # a fresh hex id per recorded run
META_DURATION = "duration_s"  # wall time of the run, in seconds
META_USAGE = "usage"  # the workflow's own LLM tokens: {"prompt_tokens", "completion_tokens"}
META_ERROR = "error"  # "ErrorType: message" when the run raised
META_KEYS: tuple[str, ...] = (
    META_ADAPTER,
    META_FRAMEWORK,
    META_FRAMEWORK_VERSION,
    META_RUN_ID,
    META_DURATION,
    META_USAGE,
)


def run_meta(adapter: str, framework: str, framework_version: str, **extra: Any) -> dict[str, Any]:
    """The metadata a new run's graph starts with: who recorded it, with which framework, and a fresh run id."""
    import uuid

    return {
        META_ADAPTER: adapter,
        META_FRAMEWORK: framework,
        META_FRAMEWORK_VERSION: framework_version,
        META_RUN_ID: uuid.uuid4().hex,
        META_USAGE: {"prompt_tokens": 0, "completion_tokens": 0},
        **extra,
    }


#: How provenance found an edge (``Edge.match``, the `opto_core.kernel.provenance.Match` kinds), strongest
#: first: the very object, a framework id, the exact text, a typed value's rendering, a template's output,
#: a text contained in a longer one, long literal fragments of a text. Empty: the tracer knew the edge directly.
MATCH_IDENTITY, MATCH_KEY, MATCH_VALUE, MATCH_TYPED = "identity", "key", "value", "typed"
MATCH_TEMPLATE, MATCH_CONTAINS, MATCH_PARTIAL = "template", "contains", "partial"
MATCH_KINDS: tuple[str, ...] = (
    MATCH_IDENTITY,
    MATCH_KEY,
    MATCH_VALUE,
    MATCH_TYPED,
    MATCH_TEMPLATE,
    MATCH_CONTAINS,
    MATCH_PARTIAL,
)
#: The key of a parent entry (JSON) that holds ``Edge.match``.
EDGE_MATCH = "match"


class GraphError(ValueError):
    """A graph that is not a valid OPTO graph (a cycle, an unknown kind, a missing parent...)."""


def jsonable(value: Any, limit: int = REPR_LIMIT) -> tuple[Any, bool]:
    """Return ``(value, is_repr)``: the value itself when it is plain JSON, else a bounded repr.

    Tuples become lists (JSON has no tuples), so that the stored value equals its JSON round trip.
    Non-finite floats are not JSON, so they are stored as their repr too.
    """
    if isinstance(value, str):
        # str subclasses (provenance tags) are stored as the plain type; a huge text is bounded
        text = str(value) if type(value) is not str else value
        return bound_text(text, MAX_GRAPH_TEXT), False
    if value is None or isinstance(value, (bool, int)):
        if type(value) in (bool, int) or value is None:
            return value, False
        return int(value), False
    if isinstance(value, float):
        return (float(value), False) if math.isfinite(value) else (repr(value), True)
    try:
        if json_depth(value) > MAX_JSON_DEPTH:
            raise ValueError("nested too deep")
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        if len(text) > MAX_GRAPH_TEXT:  # a big structure: kept as bounded text, its size and hash said
            return bound_text(text, MAX_GRAPH_TEXT), True
        return json.loads(text), False
    except (TypeError, ValueError, RecursionError):
        return bounded_repr(value, limit), True


def bounded_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """A readable repr of at most about ``limit`` characters, cut in the middle."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break tracing
        text = f"<{type(value).__name__} (repr failed: {exc})>"
    return shorten(text, limit)


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` in the middle to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 2)  # room for the marker
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + f" …[{len(text) - keep} chars cut]… " + (text[len(text) - tail :] if tail else "")


@dataclass(frozen=True)
class Edge:
    """One parent of a node: the parent's id and the argument name it fed.

    ``via`` says how the edge was found: one of `EDGE_KINDS` (`VIA_DATA`, the default, for real
    data flow; `VIA_CALL_TREE` when the framework hid the data flow, parent run -> child run;
    `VIA_CONTEXT` when the value was only in a prompt's context; `VIA_CONTROL` when it chose what
    ran next). ``match`` says which provenance rule linked a value to its producer (one of
    `MATCH_KINDS`: ``"template"`` when a prompt was a template's output), empty when the tracer
    knew the edge without matching.
    """

    id: str
    arg: str = ""
    via: str = VIA_DATA
    match: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "arg": self.arg}
        if self.via != VIA_DATA:
            data["via"] = self.via
        if self.match:
            data[EDGE_MATCH] = self.match
        return data


@dataclass(eq=True)
class Node:
    """One value in a run, with the ordered edges to the values it came from."""

    id: str
    kind: str
    name: str
    value: Any = None
    description: str = ""
    edges: list[Edge] = field(default_factory=list)
    op_type: str = ""
    doc: str = ""
    param: dict[str, Any] | None = None
    value_is_repr: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def parents(self) -> list[str]:
        """The parent ids, in argument order."""
        return [edge.id for edge in self.edges]

    @property
    def trainable(self) -> bool:
        return self.kind == "parameter" and bool(self.param and self.param.get("trainable", True))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "value": self.value,
            "parents": [edge.to_dict() for edge in self.edges],
        }
        if self.value_is_repr:
            data["value_is_repr"] = True
        for key in ("description", "op_type", "doc"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.param is not None:
            data["param"] = self.param
        if self.meta:
            data["meta"] = self.meta
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        node_id = data.get("id")
        if not isinstance(node_id, str) or not node_id:
            raise GraphError(f"a node has no string id: {bounded_repr(data, 200)}")
        kind = data.get("kind")
        if kind not in NODE_KINDS:
            raise GraphError(f"node {node_id!r} has unknown kind {kind!r} (known: {', '.join(NODE_KINDS)})")
        parents = data.get("parents", [])
        if not isinstance(parents, list):
            raise GraphError(f"node {node_id!r}: parents must be a list, got {type(parents).__name__}")
        edges = []
        for parent in parents:
            if isinstance(parent, str):
                edges.append(Edge(parent))
            elif (
                isinstance(parent, dict)
                and isinstance(parent.get("id"), str)
                and isinstance(parent.get("arg", ""), str)
                and isinstance(parent.get("via", VIA_DATA), str)
                and isinstance(parent.get(EDGE_MATCH, ""), str)
            ):
                edges.append(
                    Edge(parent["id"], parent.get("arg", ""), parent.get("via", VIA_DATA), parent.get(EDGE_MATCH, ""))
                )
            else:
                raise GraphError(f"node {node_id!r} has a malformed parent entry {bounded_repr(parent, 200)}")
        expected: dict[str, type | tuple[type, ...]] = {
            "name": str,
            "description": str,
            "op_type": str,
            "doc": str,
            "param": (dict, type(None)),
            "meta": dict,
            "value_is_repr": bool,
        }
        for key, kinds in expected.items():
            if key in data and not isinstance(data[key], kinds):
                raise GraphError(f"node {node_id!r}: {key!r} has the wrong type {type(data[key]).__name__}")
        return cls(
            id=node_id,
            kind=kind,
            name=data.get("name", node_id),
            value=data.get("value"),
            description=data.get("description", ""),
            edges=edges,
            op_type=data.get("op_type", ""),
            doc=data.get("doc", ""),
            param=data.get("param"),
            value_is_repr=bool(data.get("value_is_repr", False)),
            meta=data.get("meta", {}),
        )


class Graph:
    """A DAG of `Node`s for one run, with lookup by id and by name.

    Nodes are usually added parents-first (tracing does this), but edges may also be added
    later (adapters that recover data flow at the end of a run do). ``nodes`` is always in
    topological order; a cycle raises `GraphError` naming a node on it.
    """

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self._nodes: dict[str, Node] = {}
        self._order: list[Node] | None = []
        self._counts: dict[str, int] = {}

    # ----- building -------------------------------------------------------------------
    def add(
        self,
        kind: str,
        name: str,
        value: Any = None,
        *,
        parents: Iterable[Edge | str | tuple[str, str]] = (),
        id: str | None = None,
        description: str = "",
        op_type: str = "",
        doc: str = "",
        param: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Node:
        """Add a node and return it. ``value`` is made JSON-safe unless ``raw`` (already safe)."""
        if kind not in NODE_KINDS:
            raise GraphError(f"node {name!r}: unknown kind {kind!r} (known: {', '.join(NODE_KINDS)})")
        if id is None:
            id = self.new_id(name)
        elif id in self._nodes:
            raise GraphError(f"duplicate node id {id!r}")
        edges = [self._edge(p) for p in parents]
        for edge in edges:
            if edge.id not in self._nodes:
                raise GraphError(f"node {id!r}: parent {edge.id!r} does not exist")
        stored, is_repr = (value, False) if raw else jsonable(value)
        node = Node(id, kind, name, stored, description, edges, op_type, doc, param, is_repr, dict(meta or {}))
        self._nodes[id] = node
        if self._order is not None:
            self._order.append(node)  # parents exist already, so order stays topological
        return node

    def add_parameter(self, parameter: Any) -> Node:
        """The node of a `Parameter` (id ``param:<name>``), added once per graph and reused."""
        node_id = f"param:{parameter.name}"
        existing = self._nodes.get(node_id)
        if existing is not None:
            return existing
        return self.add(
            "parameter",
            parameter.name,
            parameter.value,
            id=node_id,
            description=parameter.description,
            param=parameter.spec(),
        )

    def add_exception(
        self,
        name: str,
        error: BaseException,
        *,
        parents: Iterable[Edge | str | tuple[str, str]] = (),
        op_type: str = "",
        doc: str = "",
        meta: dict[str, Any] | None = None,
    ) -> Node:
        """An op that raised: its value is ``"ErrorType: message"``. It is marked as an output."""
        try:
            message = str(error)
        except Exception as exc:  # a broken __str__ must not break tracing
            message = f"(the message could not be read: {type(exc).__name__})"
        text = bound_text(f"{type(error).__name__}: {message}", MAX_GRAPH_TEXT)
        node = self.add("exception", name, text, parents=parents, op_type=op_type, doc=doc, meta=meta, raw=True)
        self.mark_output(node.id)
        return node

    def add_node(self, node: Node) -> Node:
        """Add a ready-made node; its parents may be added later (call `validate` when done)."""
        if node.id in self._nodes:
            raise GraphError(f"duplicate node id {node.id!r}")
        if node.kind not in NODE_KINDS:
            raise GraphError(f"node {node.id!r} has unknown kind {node.kind!r}")
        self._nodes[node.id] = node
        self._order = None
        return node

    def add_edge(self, child_id: str, edge: Edge | str | tuple[str, str]) -> None:
        """Append a parent edge to an existing node (data flow found after the fact)."""
        edge = self._edge(edge)
        for node_id in (child_id, edge.id):
            if node_id not in self._nodes:
                raise GraphError(f"edge {edge.id!r} -> {child_id!r}: node {node_id!r} does not exist")
        self._nodes[child_id].edges.append(edge)
        self._order = None

    def mark_output(self, node_id: str, name: str | None = None) -> Node:
        """Mark a node's value as a workflow output (adds an ``output`` node) and return it."""
        node = self[node_id]
        if node.kind == "output":
            return node
        for existing in self._nodes.values():
            if existing.kind == "output" and existing.edges and existing.edges[0].id == node_id:
                return existing
        return self.add(
            "output",
            name or node.name,
            node.value,
            parents=[Edge(node_id, "value")],
            raw=True,
            meta={"value_is_repr": True} if node.value_is_repr else None,
        )

    def new_id(self, name: str) -> str:
        """A fresh id ``<name>#<k>`` (k counts per name), stable for the same sequence of adds."""
        k = self._counts.get(name, 0)
        while True:
            candidate = f"{name}#{k}"
            k += 1
            if candidate not in self._nodes:
                self._counts[name] = k
                return candidate

    @staticmethod
    def _edge(parent: Edge | str | tuple[str, str]) -> Edge:
        if isinstance(parent, Edge):
            return parent
        if isinstance(parent, str):
            return Edge(parent)
        return Edge(*parent)

    # ----- reading --------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """All nodes in topological order (parents before children; ties in insertion order)."""
        if self._order is None:
            self._order = self._toposort()
        return self._order

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __getitem__(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node with id {node_id!r}") from None

    def get(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def by_name(self, name: str) -> list[Node]:
        """Every node with this name, in topological order."""
        return [node for node in self.nodes if node.name == name]

    def of_kind(self, kind: str) -> list[Node]:
        return [node for node in self.nodes if node.kind == kind]

    @property
    def outputs(self) -> list[Node]:
        return self.of_kind("output")

    @property
    def parameters(self) -> list[Node]:
        return self.of_kind("parameter")

    def children(self) -> dict[str, list[str]]:
        """Child ids of every node (one pass; callers that walk forward build this once)."""
        result: dict[str, list[str]] = {node_id: [] for node_id in self._nodes}
        for node in self._nodes.values():
            for edge in node.edges:
                result[edge.id].append(node.id)
        return result

    def validate(self) -> Graph:
        """Check parents exist and there is no cycle; return self. Raises `GraphError`."""
        self._order = self._toposort()
        return self

    def _toposort(self) -> list[Node]:
        nodes = self._nodes
        seen: set[str] = set()
        for node in nodes.values():  # already in order (the usual case): keep insertion order
            if not all(edge.id in seen for edge in node.edges):
                break
            seen.add(node.id)
        else:
            return list(nodes.values())
        indegree: dict[str, int] = {}
        children: dict[str, list[str]] = {node_id: [] for node_id in nodes}
        for node in nodes.values():
            indegree[node.id] = len(node.edges)
            for edge in node.edges:
                if edge.id not in nodes:
                    raise GraphError(f"node {node.id!r}: parent {edge.id!r} does not exist")
                children[edge.id].append(node.id)
        # Kahn's algorithm; a deque of ready nodes, in insertion order for stable output
        ready = [node_id for node_id, count in indegree.items() if count == 0]
        order: list[Node] = []
        position = 0
        while position < len(ready):
            node_id = ready[position]
            position += 1
            order.append(nodes[node_id])
            for child in children[node_id]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(nodes):
            stuck = next(node_id for node_id, count in indegree.items() if count > 0)
            raise GraphError(f"the graph has a cycle through node {stuck!r}")
        return order

    # ----- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "meta": self.meta, "nodes": [node.to_dict() for node in self.nodes]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        """Build a graph from its JSON form; anything malformed raises `GraphError` (and nothing else)."""
        try:
            return cls._from_dict(data)
        except GraphError:
            raise
        except RecursionError:
            raise GraphError("not a graph: a value is nested too deeply") from None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise GraphError(f"not a valid OPTO graph: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Graph:
        if not isinstance(data, dict):
            raise GraphError(f"an OPTO graph is a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise GraphError(f"unsupported graph format {fmt!r}; this version reads {FORMAT!r}")
        meta, nodes = data.get("meta", {}), data.get("nodes", [])
        if not isinstance(meta, dict) or not isinstance(nodes, list):
            raise GraphError("an OPTO graph needs 'meta' to be an object and 'nodes' a list")
        graph = cls(meta=meta)
        graph._order = None
        for raw in nodes:
            if not isinstance(raw, dict):
                raise GraphError(f"a node must be a JSON object, got {type(raw).__name__}")
            node = Node.from_dict(raw)
            if node.id in graph._nodes:
                raise GraphError(f"duplicate node id {node.id!r}")
            graph._nodes[node.id] = node
        return graph.validate()

    @classmethod
    def from_json(cls, text: str | bytes) -> Graph:
        """Parse a graph; any malformed input (including nesting too deep to parse) raises `GraphError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(f"not JSON: {exc}") from exc
        except RecursionError:
            raise GraphError("not a graph: the JSON is nested too deeply") from None
        except (TypeError, ValueError) as exc:  # not a str/bytes, or bytes that are not UTF-8
            raise GraphError(f"not JSON text: {exc}") from None
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.meta == other.meta and self._nodes == other._nodes

    def __repr__(self) -> str:
        kinds = dict.fromkeys(NODE_KINDS, 0)
        for node in self._nodes.values():
            kinds[node.kind] += 1
        counts = ", ".join(f"{count} {kind}" for kind, count in kinds.items() if count)
        return f"<Graph {len(self._nodes)} nodes: {counts}>"
