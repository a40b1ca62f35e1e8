"""Drawing an OPTO graph: Mermaid text, Graphviz DOT text, and a self-contained HTML page.

Reports are opened on machines with no network, so nothing here loads a script: the HTML page
draws the graph itself as inline SVG (a layered layout computed in Python) and carries the
Mermaid and DOT sources for copy and paste. Every label is escaped for the format it goes into,
since node values come from LLMs and users (quotes, newlines, brackets, HTML).

Big graphs are cut to ``max_nodes``: the nodes nearest the outputs are kept (that is where the
feedback enters), and every drawing says how many nodes were left out.
"""

from __future__ import annotations

import html
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from opto_core.kernel.graph import VIA_CALL_TREE, VIA_CONTEXT, VIA_CONTROL, VIA_DATA, Edge, Graph, Node
from opto_core.kernel.text import as_text

#: Fill and stroke colours of each style (shared by SVG, Mermaid and DOT so they look alike).
STYLES: dict[str, tuple[str, str]] = {
    "trainable": ("#ffe0b2", "#e65100"),
    "frozen": ("#eeeeee", "#9e9e9e"),
    "input": ("#e3f2fd", "#1565c0"),
    "op": ("#ffffff", "#455a64"),
    "exception": ("#ffebee", "#c62828"),
    "output": ("#e8f5e9", "#2e7d32"),
}
STYLE_LABELS = {
    "trainable": "trainable parameter",
    "frozen": "frozen parameter",
    "input": "input",
    "op": "operation",
    "exception": "exception",
    "output": "output",
}
DASHED_VIA = (VIA_CONTEXT, VIA_CALL_TREE)
_DASH = ' stroke-dasharray="6 4"'


# ----- shared helpers ---------------------------------------------------------------------------
def style_of(node: Node) -> str:
    """The drawing style of a node: its kind, with parameters split into trainable and frozen."""
    if node.kind == "parameter":
        return "trainable" if node.trainable else "frozen"
    return node.kind if node.kind in STYLES else "op"


def preview(value: Any, limit: int = 40) -> str:
    """A one-line preview of a value: newlines shown as ↵, whitespace runs collapsed, cut to ``limit``."""
    if isinstance(value, str):
        text = '"' + value + '"'
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\r\n", "\n").replace("\n", "↵ ")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def full_text(value: Any, limit: int = 1500) -> str:
    """A value as readable multi-line text (strings as they are, others as indented JSON), cut."""
    return _cut(as_text(value, indent=1), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def kind_line(node: Node, hidden_parents: int = 0) -> str:
    """The second label line: the kind (and how it differs: trainable, op type)."""
    style = style_of(node)
    if node.kind == "parameter":
        kind = f"parameter · {style}"
        if node.param and node.param.get("kind"):
            kind += f" · {node.param['kind']}"
    elif node.kind == "op" and node.op_type:
        kind = f"op · {node.op_type}"
    else:
        kind = node.kind
    if hidden_parents:
        kind += f" (+{hidden_parents} cut)"
    return kind


@dataclass
class Selection:
    """The nodes a drawing shows (topological order), and what was cut."""

    nodes: list[Node]
    total: int
    hidden_parents: dict[str, int] = field(default_factory=dict)

    @property
    def cut(self) -> int:
        return self.total - len(self.nodes)

    @property
    def ids(self) -> set[str]:
        return {node.id for node in self.nodes}

    def note(self) -> str:
        """The sentence every drawing carries when nodes were left out ('' when none were)."""
        if not self.cut:
            return ""
        return (
            f"Graph cut to {len(self.nodes)} of {self.total} nodes: the {len(self.nodes)} nearest the "
            f"outputs are shown, {self.cut} farther ones are left out."
        )

    def edges(self) -> list[tuple[Edge, Node]]:
        """Every edge between shown nodes, as (edge, child), in drawing order."""
        shown = self.ids
        return [(edge, node) for node in self.nodes for edge in node.edges if edge.id in shown]


def select(graph: Graph, max_nodes: int = 300) -> Selection:
    """Keep at most ``max_nodes`` nodes, the nearest the outputs (fewest edges away) first.

    Outputs (or, without any, the nodes nothing depends on) are at distance 0; their parents at
    1, and so on. Ties go to outputs/exceptions, then trainable parameters, then later nodes.
    """
    if max_nodes < 1:
        raise ValueError("max_nodes must be >= 1")
    nodes = graph.nodes
    if len(nodes) <= max_nodes:
        return Selection(list(nodes), len(nodes))
    children = graph.children()
    targets = [n.id for n in nodes if n.kind in ("output", "exception")] or [n.id for n in nodes if not children[n.id]]
    distance: dict[str, int] = dict.fromkeys(targets, 0)
    queue = deque(targets)
    while queue:
        node_id = queue.popleft()
        for edge in graph[node_id].edges:
            if edge.id not in distance:
                distance[edge.id] = distance[node_id] + 1
                queue.append(edge.id)
    position = {node.id: index for index, node in enumerate(nodes)}

    def rank(node: Node) -> tuple[float, int, int]:
        tier = 0 if node.kind in ("output", "exception") else 1 if node.trainable else 2
        return (distance.get(node.id, math.inf), tier, -position[node.id])

    keep = {node.id for node in sorted(nodes, key=rank)[:max_nodes]}
    kept = [node for node in nodes if node.id in keep]
    hidden = {node.id: sum(edge.id not in keep for edge in node.edges) for node in kept}
    return Selection(kept, len(nodes), {k: v for k, v in hidden.items() if v})


# ----- Mermaid ------------------------------------------------------------------------------------
_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '"#&<>`|[]{}();'}


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label: special characters become entity codes (#34;)."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in text)


def to_mermaid(graph: Graph, max_nodes: int = 300) -> str:
    """The graph as a Mermaid flowchart (top to bottom), styled by node kind."""
    selection = select(graph, max_nodes)
    ids = {node.id: f"n{index}" for index, node in enumerate(selection.nodes)}
    shapes = {
        "trainable": ('{{"', '"}}'),
        "frozen": ('{{"', '"}}'),
        "input": ('[/"', '"/]'),
        "op": ('["', '"]'),
        "exception": ('>"', '"]'),
        "output": ('(["', '"])'),
    }
    lines = ["flowchart TD"]
    note = selection.note()
    if note:
        lines.append(f"    %% {note}")
        lines.append(f'    cutnote["{mermaid_escape(note)}"]:::note')
    classes: dict[str, list[str]] = {}
    for node in selection.nodes:
        style = style_of(node)
        label = "<br>".join(
            mermaid_escape(part)
            for part in (
                _cut(node.name, 60),
                kind_line(node, selection.hidden_parents.get(node.id, 0)),
                preview(node.value),
            )
        )
        left, right = shapes[style]
        lines.append(f"    {ids[node.id]}{left}{label}{right}")
        classes.setdefault(style, []).append(ids[node.id])
    for edge, child in selection.edges():
        arrow = "-.->" if edge.via in DASHED_VIA else "==>" if edge.via == VIA_CONTROL else "-->"
        text = _edge_text(edge)
        label = f'|"{mermaid_escape(text)}"|' if text else ""
        lines.append(f"    {ids[edge.id]} {arrow}{label} {ids[child.id]}")
    for style, (fill, stroke) in STYLES.items():
        dash = ",stroke-dasharray:4 3" if style == "frozen" else ""
        lines.append(f"    classDef {style} fill:{fill},stroke:{stroke},color:#111{dash}")
    lines.append("    classDef note fill:#fff8e1,stroke:#f9a825,color:#111")
    for style, members in classes.items():
        lines.append(f"    class {','.join(members)} {style}")
    return "\n".join(lines) + "\n"


def edge_kind(edge: Edge) -> str:
    """How an edge is drawn: ``data`` (solid), ``dash`` (context, call tree) or ``control`` (bold)."""
    return "dash" if edge.via in DASHED_VIA else "control" if edge.via == VIA_CONTROL else "data"


def _edge_text(edge: Edge) -> str:
    arg = _cut(edge.arg, 40)
    if edge.via != VIA_DATA:
        return f"{arg} ({edge.via})" if arg else edge.via
    return arg


# ----- Graphviz DOT ---------------------------------------------------------------------------------
def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted DOT string: backslashes and quotes escaped, newlines as \\n."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def to_dot(graph: Graph, max_nodes: int = 300) -> str:
    """The graph as a Graphviz digraph (top to bottom), styled by node kind."""
    selection = select(graph, max_nodes)
    shapes = {
        "trainable": "box",
        "frozen": "box",
        "input": "parallelogram",
        "op": "box",
        "exception": "octagon",
        "output": "box",
    }
    lines = [
        "digraph opto {",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=11, style="filled"];',
        '  edge [fontname="Helvetica", fontsize=9, color="#607d8b"];',
    ]
    note = selection.note()
    if note:
        lines.append(f"  // {note}")
        lines.append(f'  label="{dot_escape(note)}"; labelloc=t; fontname="Helvetica"; fontsize=12;')
    for node in selection.nodes:
        style = style_of(node)
        fill, stroke = STYLES[style]
        look = {"trainable": "rounded,filled,bold", "frozen": "rounded,filled,dashed"}.get(style, "filled")
        label = "\n".join(
            (_cut(node.name, 60), kind_line(node, selection.hidden_parents.get(node.id, 0)), preview(node.value))
        )
        extra = ", peripheries=2" if style == "output" else ""
        tooltip = f"{node.id}\n{preview(node.value, 400)}"
        lines.append(
            f'  "{dot_escape(node.id)}" [label="{dot_escape(label)}", shape={shapes[style]}, '
            f'style="{look}", fillcolor="{fill}", color="{stroke}"{extra}, '
            f'tooltip="{dot_escape(tooltip)}"];'
        )
    for edge, child in selection.edges():
        attrs = []
        text = _edge_text(edge)
        if text:
            attrs.append(f'label="{dot_escape(text)}"')
        if edge.via in DASHED_VIA:
            attrs.append("style=dashed")
        elif edge.via == VIA_CONTROL:
            attrs.append('style=bold, color="#8e24aa"')
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f'  "{dot_escape(edge.id)}" -> "{dot_escape(child.id)}"{suffix};')
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----- SVG layout ---------------------------------------------------------------------------------
BOX_W, BOX_H = 200, 56
DUMMY_W = 12
REF_W, REF_H = 150, 22
#: A node with at least this many edges reaching more than one row down is repeated as a small
#: reference box above each far consumer instead of sending long lines across the drawing.
REF_MIN_EDGES = 3
H_GAP, V_GAP = 28, 64
ROW_CAPACITY = 7
MARGIN = 24


@dataclass
class _Slot:
    key: Any
    row: int
    width: float
    node: Node | None = None  # the node drawn here (for a reference: the node it stands for)
    role: str = "node"  # "node", "bend" (a long edge's channel) or "ref" (a small copy of a busy source)
    x: float = 0.0  # centre
    up: list[Any] = field(default_factory=list)
    down: list[Any] = field(default_factory=list)


@dataclass
class Layout:
    """Positions computed for the SVG drawing."""

    slots: dict[Any, _Slot]
    rows: list[list[Any]]
    paths: list[tuple[Edge, Node, list[Any]]]  # edge, child, slot keys from parent to child
    width: float
    height: float

    def y(self, row: int) -> float:
        return MARGIN + row * (BOX_H + V_GAP)


def layout(selection: Selection) -> Layout:
    """A layered layout. Each node goes one row below its lowest parent (the longest path from the
    roots) in the first row there with room (at most ``ROW_CAPACITY`` boxes a row, so wide graphs
    wrap into a staircase instead of running off sideways); a root goes in next to its first use.
    Long edges bend through every row they cross, in one channel per source, except that a source
    with ``REF_MIN_EDGES`` or more long edges is repeated as a small reference box above each far
    consumer. Rows are ordered by barycentres and placed by least squares around their neighbours."""
    nodes = selection.nodes
    shown = selection.ids
    order = {node.id: index for index, node in enumerate(nodes)}
    children: dict[str, list[str]] = {node.id: [] for node in nodes}
    for edge, child in selection.edges():
        children[edge.id].append(child.id)
    row_of: dict[str, int] = {}
    filled: dict[int, int] = {}

    def put(key: str, lowest: int) -> None:
        row = lowest
        while filled.get(row, 0) >= ROW_CAPACITY:
            row += 1
        row_of[key] = row
        filled[row] = filled.get(row, 0) + 1

    for node in nodes:
        parents = list(dict.fromkeys(e.id for e in node.edges if e.id in shown))
        if not parents:
            if not children[node.id]:
                put(node.id, 0)  # a lone node; a root with children waits for its first child
            continue
        placed = [row_of[p] for p in parents if p in row_of]
        for parent in parents:  # roots go into the row of the child's other parents (or the top)
            if parent not in row_of:
                put(parent, max(placed, default=0))
        put(node.id, max(row_of[p] for p in parents) + 1)
    rows: list[list[Any]] = [[] for _ in range(max(row_of.values(), default=-1) + 1)]
    for node in nodes:
        rows[row_of[node.id]].append(node.id)
    slots: dict[Any, _Slot] = {node.id: _Slot(node.id, row_of[node.id], BOX_W, node) for node in nodes}
    long_edges: dict[str, int] = {}
    for edge, child in selection.edges():
        if row_of[child.id] - row_of[edge.id] > 1:
            long_edges[edge.id] = long_edges.get(edge.id, 0) + 1
    paths: list[tuple[Edge, Node, list[Any]]] = []
    for edge, child in selection.edges():
        chain: list[Any] = [edge.id]
        far = row_of[child.id] - row_of[edge.id] > 1
        if far and long_edges.get(edge.id, 0) >= REF_MIN_EDGES:
            # a busy source (a prompt used by every call): a small copy of it right above the consumer
            ref_row = row_of[child.id] - 1
            ref = ("ref", edge.id, ref_row)
            if ref not in slots:
                slots[ref] = _Slot(ref, ref_row, REF_W, slots[edge.id].node, role="ref")
                rows[ref_row].append(ref)
            chain = [ref]
        else:
            for row in range(row_of[edge.id] + 1, row_of[child.id]):
                # other long edges from one source share one channel (a tuple never equals a node id)
                key = ("bend", edge.id, edge_kind(edge), row)
                if key not in slots:
                    slots[key] = _Slot(key, row, DUMMY_W, role="bend")
                    rows[row].append(key)
                chain.append(key)
        chain.append(child.id)
        for upper, lower in zip(chain, chain[1:]):
            if lower not in slots[upper].down:
                slots[upper].down.append(lower)
                slots[lower].up.append(upper)
        paths.append((edge, child, chain))
    _order_rows(rows, slots, order)
    _place(rows, slots)
    width = max((s.x + s.width / 2 for s in slots.values()), default=0) + MARGIN
    height = MARGIN * 2 + len(rows) * BOX_H + max(len(rows) - 1, 0) * V_GAP
    return Layout(slots, rows, paths, width, height)


def _order_rows(rows: list[list[Any]], slots: dict[Any, _Slot], order: dict[str, int]) -> None:
    """Barycentre sweeps: sort each row by the mean position of its neighbours in the row before."""
    index = {key: i for row in rows for i, key in enumerate(row)}

    def sweep(sequence: Iterable[int], neighbours: str) -> None:
        for r in sequence:
            row = rows[r]

            def centre(key: str) -> float:
                near = getattr(slots[key], neighbours)
                return sum(index[k] for k in near) / len(near) if near else index[key]

            row.sort(key=lambda k: (centre(k), order.get(k, 0)))
            for i, key in enumerate(row):
                index[key] = i

    for _ in range(3):
        sweep(range(1, len(rows)), "up")
        sweep(range(len(rows) - 2, -1, -1), "down")
    sweep(range(1, len(rows)), "up")


def _place(rows: list[list[Any]], slots: dict[Any, _Slot]) -> None:
    """Give every slot an x: packed first, then pulled towards its neighbours (order kept)."""
    widest = max((sum(slots[k].width for k in row) + H_GAP * (len(row) - 1) for row in rows), default=0)
    for row in rows:
        total = sum(slots[k].width for k in row) + H_GAP * (len(row) - 1)
        x = MARGIN + (widest - total) / 2
        for key in row:
            slots[key].x = x + slots[key].width / 2
            x += slots[key].width + H_GAP
    for _ in range(4):
        for r in range(1, len(rows)):
            _fit_row(rows[r], slots, "up")
        for r in range(len(rows) - 2, -1, -1):
            _fit_row(rows[r], slots, "down")
    left = min((s.x - s.width / 2 for s in slots.values()), default=MARGIN)
    for slot in slots.values():
        slot.x += MARGIN - left


def _fit_row(row: list[str], slots: dict[str, _Slot], neighbours: str) -> None:
    """Least-squares placement of one row at its neighbours' mean x, keeping order and gaps
    (pool adjacent violators over blocks of touching slots)."""
    if not row:
        return
    desired = []
    for key in row:
        near = getattr(slots[key], neighbours)
        if slots[key].role == "bend":  # a channel follows itself, so it runs straight down
            near = [k for k in near if slots[k].role == "bend"] or near
        desired.append(sum(slots[k].x for k in near) / len(near) if near else slots[key].x)
    offsets = [0.0]
    for a, b in zip(row, row[1:]):
        offsets.append(offsets[-1] + slots[a].width / 2 + H_GAP + slots[b].width / 2)
    blocks: list[list[float]] = []  # [first index, last index, sum of (desired - offset), position]
    for i in range(len(row)):
        blocks.append([i, i, desired[i] - offsets[i], desired[i] - offsets[i]])
        while len(blocks) > 1 and blocks[-2][3] > blocks[-1][3]:
            merged = blocks.pop()
            prev = blocks[-1]
            prev[1] = merged[1]
            prev[2] += merged[2]
            prev[3] = prev[2] / (prev[1] - prev[0] + 1)
    for first, last, _, base in blocks:
        for i in range(int(first), int(last) + 1):
            slots[row[i]].x = base + offsets[i]


def to_svg(graph: Graph, max_nodes: int = 300, selection: Selection | None = None) -> str:
    """The graph drawn as one inline ``<svg>`` element (no script, no external file)."""
    selection = selection or select(graph, max_nodes)
    if not selection.nodes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40" role="img">'
            '<text x="10" y="24" font-size="13">(the graph is empty)</text></svg>'
        )
    plan = layout(selection)
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="opto-graph-svg" width="{plan.width:.0f}" '
        f'height="{plan.height:.0f}" viewBox="0 0 {plan.width:.0f} {plan.height:.0f}" role="img" '
        f'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">',
        "<defs>",
    ]
    for name, colour in (("data", "#607d8b"), ("dash", "#90a4ae"), ("control", "#8e24aa")):
        parts.append(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
        )
    parts.append("</defs>")
    # edges that leave (enter) a box towards the same neighbour share one point on its bottom (top)
    # side; different neighbours are spread along the side in the order of their x
    start_x: dict[int, float] = {}
    end_x: dict[int, float] = {}
    for ends, side, toward in ((start_x, 0, 1), (end_x, -1, -2)):
        groups: dict[Any, dict[Any, list[int]]] = {}
        for number, (_, _, chain) in enumerate(plan.paths):
            groups.setdefault(chain[side], {}).setdefault(chain[toward], []).append(number)
        for key, by_neighbour in groups.items():
            slot = plan.slots[key]
            usable = slot.width * 0.8
            neighbours = sorted(by_neighbour, key=lambda k: plan.slots[k].x)
            for i, neighbour in enumerate(neighbours):
                x = slot.x - usable / 2 + usable * (i + 1) / (len(neighbours) + 1)
                for number in by_neighbour[neighbour]:
                    ends[number] = x
    colours = {"data": "#607d8b", "dash": "#90a4ae", "control": "#8e24aa"}
    shared: dict[str, dict[tuple[float, ...], None]] = {kind: {} for kind in colours}
    finals = []
    labels = []
    for number, (edge, child, chain) in enumerate(plan.paths):
        first, last = plan.slots[chain[0]], plan.slots[chain[-1]]
        points = [(start_x[number], plan.y(first.row) + BOX_H)]
        for key in chain[1:-1]:
            slot = plan.slots[key]
            points += [(slot.x, plan.y(slot.row)), (slot.x, plan.y(slot.row) + BOX_H)]
        points.append((end_x[number], plan.y(last.row) - 1))
        kind = edge_kind(edge)
        for (x1, y1), (x2, y2) in zip(points[:-2], points[1:-1]):  # channel segments: drawn once
            shared[kind][(round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1))] = None
        (x1, y1), (x2, y2) = points[-2], points[-1]
        title = (
            f"{edge.id} → {child.id}"
            + (f" ({edge.arg})" if edge.arg else "")
            + (f" via {edge.via}" if edge.via != VIA_DATA else "")
        )
        finals.append(
            f'<path class="edge edge-{e(edge.via)}" d="M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}" '
            f'stroke="{colours[kind]}" stroke-width="{2 if kind == "control" else 1.3}"'
            f'{_DASH if kind == "dash" else ""} marker-end="url(#arrow-{kind})">'
            f"<title>{e(title)}</title></path>"
        )
        text = _edge_text(edge)
        if text:
            labels.append((_cut(text, 24), title, x1, y1, x2, y2))
    placed: list[tuple[float, float, float, float]] = []
    label_parts = []
    for text, title, x1, y1, x2, y2 in labels:  # each label where it overlaps the fewest placed ones
        half = len(text) * 2.9 + 3
        tried = []
        for t in (0.5, 0.3, 0.7, 0.15, 0.85):
            lx, ly = x1 + (x2 - x1) * t, y1 + (y2 - y1) * t
            box = (lx - half, ly - 7, lx + half, ly + 5)
            hits = sum(1 for b in placed if box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3])
            tried.append((hits, lx, ly, box))
            if hits == 0:
                break
        _, lx, ly, box = min(tried, key=lambda candidate: candidate[0])  # the first of the fewest overlaps
        placed.append(box)
        label_parts.append(
            f'<text class="edge-label" x="{lx:.1f}" y="{ly + 3:.1f}" text-anchor="middle" '
            f'font-size="10" fill="#37474f" stroke="#fcfcfd" stroke-width="3" '
            f'paint-order="stroke">{e(text)}<title>{e(title)}</title></text>'
        )
    parts.append('<g class="edges" fill="none">')
    for kind, segments in shared.items():
        if segments:
            d = " ".join(f"M{x1},{y1} L{x2},{y2}" for x1, y1, x2, y2 in segments)
            parts.append(
                f'<path class="channel channel-{kind}" d="{d}" stroke="{colours[kind]}" '
                f'stroke-width="{2 if kind == "control" else 1.3}"'
                f'{_DASH if kind == "dash" else ""}/>'
            )
    parts += finals
    parts.append("</g>")
    parts.append('<g class="edge-labels">' + "".join(label_parts) + "</g>")
    parts.append('<g class="nodes">')
    name_count: dict[str, int] = {}
    for node in selection.nodes:
        name_count[node.name] = name_count.get(node.name, 0) + 1
    for slot in plan.slots.values():
        if slot.role != "ref" or slot.node is None:
            continue
        node = slot.node
        style = style_of(node)
        fill, stroke = STYLES[style]
        x, y = slot.x - REF_W / 2, plan.y(slot.row) + BOX_H - REF_H
        parts.append(
            f'<g class="ref ref-{style}" data-ref="{e(node.id)}"><title>{e(node.id)} (drawn in full '
            f'further up; repeated here to keep lines short)</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{REF_W}" height="{REF_H}" rx="11" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.2" stroke-dasharray="3 2"/>'
            f'<text x="{slot.x:.1f}" y="{y + 15:.1f}" text-anchor="middle" font-size="11" fill="#111">'
            f'↑ {e(_cut(node.name if name_count[node.name] == 1 else node.id, 21))}</text></g>'
        )
    for node in selection.nodes:
        slot = plan.slots[node.id]
        style = style_of(node)
        fill, stroke = STYLES[style]
        x, y = slot.x - BOX_W / 2, plan.y(slot.row)
        rx = 14 if node.kind == "parameter" else 26 if node.kind == "output" else 4
        dash = ' stroke-dasharray="5 3"' if style == "frozen" else ""
        stroke_w = "2.2" if style in ("trainable", "exception") else "1.3"
        tooltip = (
            f"{node.id} ({kind_line(node)})"
            + (f"\n{node.description}" if node.description else "")
            + f"\n\n{full_text(node.value, 1500)}"
        )
        parts.append(
            f'<g class="node node-{style}" data-id="{e(node.id)}"><title>{e(tooltip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{stroke_w}"{dash}/>'
            f'<text x="{slot.x:.1f}" y="{y + 17:.1f}" text-anchor="middle" font-size="12" '
            f'font-weight="600" fill="#111">{e(_cut(node.name, 27))}</text>'
            f'<text x="{slot.x:.1f}" y="{y + 31:.1f}" text-anchor="middle" font-size="10" '
            f'fill="{stroke}">{e(_cut(kind_line(node, selection.hidden_parents.get(node.id, 0)), 34))}'
            f'</text>'
            f'<text x="{slot.x:.1f}" y="{y + 47:.1f}" text-anchor="middle" font-size="10.5" '
            f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" fill="#333">'
            f'{e(preview(node.value, 29))}</text></g>'
        )
    parts.append("</g></svg>")
    return "".join(parts)


# ----- HTML -------------------------------------------------------------------------------------------
GRAPH_CSS = """
.opto-graph-box{overflow:auto;max-height:85vh;border:1px solid #d0d7de;border-radius:6px;background:#fcfcfd;padding:4px}
.opto-legend{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:12px;margin:6px 0 8px}
.opto-legend span{display:inline-flex;align-items:center;gap:5px}
.opto-legend i{display:inline-block;width:14px;height:11px;border:1.5px solid;border-radius:3px}
.opto-legend b{display:inline-block;width:26px;border-top:1.5px solid #607d8b}
.opto-legend b.dash{border-top:1.5px dashed #90a4ae}
.opto-graph-summary{font-size:13px;color:#424a53;margin:4px 0}
.opto-note{background:#fff8e1;border:1px solid #f9a825;border-radius:4px;padding:6px 10px;font-size:13px}
details.opto-source pre{max-height:360px;overflow:auto;background:#f6f8fa;border:1px solid #d0d7de;padding:8px;font-size:12px}
details.opto-source summary{cursor:pointer;font-size:13px;margin:4px 0}
"""


def graph_fragment(graph: Graph, max_nodes: int = 300) -> str:
    """The drawing as an HTML fragment (legend, cut note, SVG, Mermaid and DOT sources);
    needs `GRAPH_CSS` in the page."""
    selection = select(graph, max_nodes)
    e = html.escape
    legend = ['<div class="opto-legend">']
    for style, (fill, stroke) in STYLES.items():
        dash = ";border-style:dashed" if style == "frozen" else ""
        legend.append(
            f'<span><i style="background:{fill};border-color:{stroke}{dash}"></i>{STYLE_LABELS[style]}</span>'
        )
    legend.append('<span><b></b>data</span><span><b class="dash"></b>context / call tree</span></div>')
    counts: dict[str, int] = {}
    for node in graph.nodes:
        counts[node.kind] = counts.get(node.kind, 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    parts = [f'<p class="opto-graph-summary">{len(graph)} nodes ({e(summary)}). Hover a box for its full value.</p>']
    note = selection.note()
    if note:
        parts.append(f'<p class="opto-note">{e(note)}</p>')
    parts += legend
    parts.append(f'<div class="opto-graph-box">{to_svg(graph, max_nodes, selection)}</div>')
    parts.append(
        f'<details class="opto-source"><summary>Mermaid source</summary><pre>'
        f'{e(to_mermaid(graph, max_nodes))}</pre></details>'
    )
    parts.append(
        f'<details class="opto-source"><summary>Graphviz DOT source</summary><pre>'
        f'{e(to_dot(graph, max_nodes))}</pre></details>'
    )
    return "\n".join(parts)


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;line-height:1.45}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
table.meta{border-collapse:collapse;font-size:13px} table.meta td{border:1px solid #d8dee4;padding:3px 8px;vertical-align:top}
table.meta td:first-child{color:#57606a;white-space:nowrap}
"""


def graph_html(graph: Graph, *, title: str | None = None, max_nodes: int = 300) -> str:
    """A self-contained HTML page showing the graph (inline SVG; Mermaid and DOT sources below)."""
    e = html.escape
    name = graph.meta.get("target") or graph.meta.get("name") or graph.meta.get("run")
    title = title or (f"OPTO graph: {name}" if name else "OPTO graph")
    meta_rows = "".join(
        f"<tr><td>{e(str(k))}</td><td>{e(_cut(preview(v, 400) if not isinstance(v, str) else v, 400))}</td></tr>"
        for k, v in graph.meta.items()
    )
    meta = f'<table class="meta">{meta_rows}</table>' if meta_rows else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>{PAGE_CSS}{GRAPH_CSS}</style></head><body>"
        f"<h1>{e(title)}</h1>{meta}<h2>Graph</h2>{graph_fragment(graph, max_nodes)}</body></html>\n"
    )
