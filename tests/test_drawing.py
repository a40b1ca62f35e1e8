"""Drawing graphs: Mermaid and DOT text, the inline-SVG page, escaping, and cutting big graphs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_core.app.drawing import (
    Selection,
    graph_html,
    layout,
    preview,
    select,
    to_dot,
    to_mermaid,
    to_svg,
)
from opto_core.kernel.graph import Edge, Graph
from opto_core.kernel.parameters import Parameter

EVIL = 'say "hi" <script>alert(1)</script> [a] {b} (c) | # & `x`\nsecond line'


def every_kind() -> Graph:
    """One node of every kind and style, and one edge of every `via`."""
    g = Graph(meta={"target": "demo"})
    prompt = g.add_parameter(Parameter("prompt", "text", EVIL))
    frozen = g.add_parameter(Parameter("temperature", "float", 0.2, trainable=False))
    question = g.add("input", "question", "What is 2+2?")
    call = g.add(
        "op",
        "llm",
        "4",
        parents=[Edge(question.id, "user"), Edge(prompt.id, "system"), Edge(frozen.id, "temperature")],
        op_type="llm",
    )
    tool = g.add("op", "tool", "result", parents=[Edge(call.id, "args"), Edge(question.id, "q", "context")])
    g.add_exception("parser", ValueError("bad <json>"), parents=[Edge(tool.id, "text", "call_tree")])
    route = g.add("op", "route", "next", parents=[Edge(call.id, "choice", "control")])
    g.mark_output(route.id, "answer")
    return g


def chain(length: int) -> Graph:
    """input -> op -> op -> ... -> output, with one trainable parameter feeding every op."""
    g = Graph()
    param = g.add_parameter(Parameter("p", "text", "instructions"))
    previous = g.add("input", "x", 1)
    for i in range(length):
        previous = g.add("op", f"step{i}", i, parents=[Edge(previous.id, "prev"), Edge(param.id, "p")])
    g.mark_output(previous.id)
    return g


MERMAID_NODE = re.compile(r'^\s+(n\d+)(\{\{"|\[/"|\["|>"|\(\[")(.*?)("\}\}|"/\]|"\]\)|"\])$')


def mermaid_nodes(text: str) -> dict[str, str]:
    nodes = {}
    for line in text.splitlines():
        match = MERMAID_NODE.match(line)
        if match:
            nodes[match.group(1)] = match.group(3)
    return nodes


# ----- Mermaid ----------------------------------------------------------------------------------------------
def test_mermaid_styles_each_kind_and_labels_edges():
    g = every_kind()
    text = to_mermaid(g)
    assert text.startswith("flowchart TD\n")
    nodes = mermaid_nodes(text)
    assert len(nodes) == len(g)
    by_name = {}
    for mid, label in nodes.items():
        name, kind = label.split("<br>")[:2]
        if kind != "output":  # an output node repeats the name of what it marks
            by_name[name] = mid
    outputs = [mid for mid, label in nodes.items() if label.split("<br>")[1] == "output"]
    classes = {m.group(2): m.group(1).split(",") for m in re.finditer(r"^\s+class (\S+) (\w+)$", text, re.M)}
    assert classes["trainable"] == [by_name["prompt"]]
    assert classes["frozen"] == [by_name["temperature"]]
    assert classes["input"] == [by_name["question"]]
    assert classes["exception"] == [by_name["parser"]]
    assert sorted(classes["output"]) == sorted(outputs) and len(outputs) == 2  # the exception and the answer
    assert f'{by_name["question"]} -->|"user"| {by_name["llm"]}' in text
    assert f'{by_name["question"]} -.->|"q #40;context#41;"| {by_name["tool"]}' in text
    assert f'{by_name["tool"]} -.->|"text #40;call_tree#41;"| {by_name["parser"]}' in text
    assert f'{by_name["llm"]} ==>|"choice #40;control#41;"| {by_name["route"]}' in text
    for style in ("trainable", "frozen", "input", "op", "exception", "output"):
        assert f"classDef {style} " in text


def test_mermaid_escapes_quotes_html_brackets_and_newlines():
    text = to_mermaid(every_kind())
    assert "<script" not in text and "alert(1)" not in text
    for label in mermaid_nodes(text).values():
        assert '"' not in label
        assert "\n" not in label
        assert "<" not in label.replace("<br>", "")
        for char in "[]{}()|`":
            assert char not in label
    prompt_label = next(label for label in mermaid_nodes(text).values() if label.startswith("prompt<br>"))
    assert "#34;say #34;hi#34; #60;script#62;alert#40;1#41;" in prompt_label


def test_preview_is_one_short_line():
    assert preview("a\nb", 40) == '"a↵ b"'
    assert preview({"k": [1, 2]}) == '{"k": [1, 2]}'
    long = preview("x" * 500, 40)
    assert len(long) == 40 and long.endswith("…")


# ----- DOT ------------------------------------------------------------------------------------------------------
DOT_STRING = r'"((?:[^"\\]|\\.)*)"'


def test_dot_escapes_and_styles():
    g = every_kind()
    text = to_dot(g)
    assert text.startswith("digraph opto {") and text.rstrip().endswith("}")
    # every statement line is made only of well-formed quoted strings and plain tokens
    for line in text.splitlines()[1:-1]:
        stripped = re.sub(DOT_STRING, "S", line)
        assert '"' not in stripped, line
    prompt_line = next(line for line in text.splitlines() if line.startswith('  "param:prompt" ['))
    label = re.search(r'label=' + DOT_STRING, prompt_line).group(1)
    assert '\\"hi\\"' in label and "<script>" in label  # quotes escaped; HTML is plain text in a DOT string
    assert "\n" not in label
    assert 'style="rounded,filled,bold"' in prompt_line
    assert 'style="rounded,filled,dashed"' in next(
        line for line in text.splitlines() if line.startswith('  "param:temperature" [')
    )
    assert re.search(r'"question#0" -> "tool#0" \[label="q \(context\)", style=dashed\]', text)
    assert re.search(r'"tool#0" -> "parser#0" \[label="text \(call_tree\)", style=dashed\]', text)
    assert '"question#0" -> "llm#0" [label="user"];' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_our_dot_and_keeps_labels():
    """Graphviz itself parses the DOT and draws each label line exactly (quotes, backslashes, HTML)."""
    import xml.etree.ElementTree as ET

    g = every_kind()
    g.add("input", 'back\\slash "q"', "ends with a backslash \\")
    result = subprocess.run(["dot", "-Tsvg"], input=to_dot(g), capture_output=True, text=True, check=True)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    drawn = {}
    for group in ET.fromstring(result.stdout).iter("{http://www.w3.org/2000/svg}g"):
        if group.get("class") == "node":
            drawn[group.find("svg:title", ns).text] = [t.text for t in group.findall(".//svg:text", ns)]
    assert len(drawn) == len(g)
    assert drawn["param:prompt"] == ["prompt", "parameter · trainable · text", preview(EVIL)]
    assert ['back\\slash "q"', "input", '"ends with a backslash \\"'] in drawn.values()
    edges = result.stdout.count('class="edge"')
    assert edges == sum(len(node.edges) for node in g.nodes)


# ----- cutting big graphs ---------------------------------------------------------------------------------------
def test_cut_keeps_the_nodes_nearest_the_outputs_and_says_so():
    g = chain(60)  # 63 nodes
    selection = select(g, 10)
    assert len(selection.nodes) == 10 and selection.cut == len(g) - 10
    kept = {node.name for node in selection.nodes}
    assert any(node.kind == "output" for node in selection.nodes)
    assert "step59" in kept and "p" in kept  # the parameter feeds the last op
    assert "x" not in kept and "step0" not in kept
    assert selection.hidden_parents  # the farthest kept op lost its parent
    note = selection.note()
    assert "10 of 63" in note
    mermaid = to_mermaid(g, max_nodes=10)
    assert len(mermaid_nodes(mermaid)) == 10
    assert f"%% {note}" in mermaid and "cutnote[" in mermaid
    dot = to_dot(g, max_nodes=10)
    assert dot.count(' [label="') - dot.count("->") == 10
    assert note in dot
    page = graph_html(g, max_nodes=10)
    assert note in page and page.count('<g class="node ') == 10
    assert "(+1 cut)" in page
    assert select(g, 1000).note() == ""
    with pytest.raises(ValueError):
        select(g, 0)


def test_not_cut_below_the_limit():
    g = every_kind()
    assert select(g, len(g)).cut == 0
    assert "cutnote" not in to_mermaid(g, max_nodes=len(g))


# ----- the SVG page -----------------------------------------------------------------------------------------------
def test_graph_html_is_self_contained_and_escaped():
    g = every_kind()
    page = graph_html(g)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('<g class="node ') == len(g)
    for style in ("trainable", "frozen", "input", "op", "exception", "output"):
        assert f'class="node node-{style}"' in page
    # the Mermaid and DOT sources are there, escaped, for copy and paste
    assert "<summary>Mermaid source</summary>" in page and "<summary>Graphviz DOT source</summary>" in page
    assert "flowchart TD" in page and "digraph opto {" in page
    assert '-.-&gt;|&quot;q #40;context#41;&quot;|' in page
    # context and call-tree edges are dashed, data edges are not
    tags = re.findall(r'<path class="edge edge-(\w+)"([^>]*)>', page)
    styles = {via: 'stroke-dasharray="6 4"' in attrs for via, attrs in tags}
    assert styles == {"data": False, "context": True, "call_tree": True, "control": False}


def test_empty_graph_draws_a_message():
    assert "empty" in to_svg(Graph())
    assert "flowchart TD" in to_mermaid(Graph())


def test_busy_source_is_repeated_near_far_consumers():
    """A prompt used by many calls far below gets small reference boxes, not lines across the page."""
    g = Graph()
    prompt = g.add_parameter(Parameter("prompt", "text", "Summarize"))
    previous = g.add("input", "doc", "text")
    for i in range(6):
        previous = g.add("op", "llm", f"out {i}", parents=[Edge(previous.id, "text"), Edge(prompt.id, "system")])
    page = graph_html(g)
    refs = re.findall(r'<g class="ref ref-trainable" data-ref="param:prompt">', page)
    assert len(refs) >= 3
    assert page.count('class="edge edge-data"') == sum(len(n.edges) for n in g.nodes)


# ----- layout properties ------------------------------------------------------------------------------------------
@st.composite
def dags(draw):
    size = draw(st.integers(1, 40))
    g = Graph()
    ids = []
    for i in range(size):
        parents = draw(st.lists(st.sampled_from(ids), max_size=4, unique=True)) if ids else []
        via = draw(st.sampled_from(["data", "context", "call_tree", "control"]))
        kind = "op" if parents else draw(st.sampled_from(["input", "parameter"]))
        if kind == "parameter":
            ids.append(g.add_parameter(Parameter(f"p{i}", "text", "v")).id)
        else:
            ids.append(g.add(kind, f"n{i}", i, parents=[Edge(p, f"a{j}", via) for j, p in enumerate(parents)]).id)
    return g


@settings(max_examples=60, deadline=None)
@given(dags(), st.integers(3, 50))
def test_layout_edges_point_down_and_boxes_never_overlap(g, max_nodes):
    selection = select(g, max_nodes)
    plan = layout(selection)
    for _edge, child, chain_ in plan.paths:
        rows = [plan.slots[key].row for key in chain_]
        assert rows == sorted(rows) and len(set(rows)) == len(rows), "every edge goes down, one row at a time"
        assert plan.slots[chain_[-1]].node is child
    for row in plan.rows:
        slots = sorted((plan.slots[key] for key in row), key=lambda s: s.x)
        for left, right in zip(slots, slots[1:]):
            assert left.x + left.width / 2 <= right.x - right.width / 2 + 1e-6
    for slot in plan.slots.values():
        assert slot.x - slot.width / 2 >= 0 and slot.x + slot.width / 2 <= plan.width
    assert sum(1 for s in plan.slots.values() if s.role == "node") == len(selection.nodes)
    assert isinstance(selection, Selection)
