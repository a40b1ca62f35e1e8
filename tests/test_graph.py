"""The OPTO graph: building, topological order, validation errors and the exact JSON round trip."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_core import Edge, Graph, GraphError, Parameter
from opto_core.kernel.graph import FORMAT, REPR_LIMIT


def small_graph() -> Graph:
    g = Graph(meta={"adapter": "test", "run_id": "r1"})
    p = g.add_parameter(Parameter("prompt", "text", "Answer briefly."))
    x = g.add("input", "question", "2+2?")
    call = g.add(
        "op",
        "llm",
        "4",
        parents=[Edge(p.id, "system"), Edge(x.id, "user")],
        op_type="llm",
        doc="model=gpt; temperature=0",
    )
    g.mark_output(call.id)
    return g


def test_nodes_have_the_public_fields_and_parent_ids():
    g = small_graph()
    kinds = [n.kind for n in g.nodes]
    assert kinds == ["parameter", "input", "op", "output"]
    call = g.by_name("llm")[0]
    assert call.parents == ["param:prompt", "question#0"]
    assert [e.arg for e in call.edges] == ["system", "user"]
    assert g["param:prompt"].param["kind"] == "text" and g["param:prompt"].trainable


def test_json_round_trip_is_exact_and_versioned():
    g = small_graph()
    text = g.to_json()
    assert json.loads(text)["format"] == FORMAT == "opto-graph/1"
    again = Graph.from_json(text)
    assert again == g
    assert again.to_json() == text


def test_non_json_values_become_a_bounded_marked_repr():
    class Thing:
        def __repr__(self):
            return "Thing(" + "x" * 10_000 + ")"

    g = Graph()
    node = g.add("input", "thing", Thing())
    assert node.value_is_repr and node.value.startswith("Thing(") and len(node.value) <= REPR_LIMIT
    assert "chars cut" in node.value
    assert g.add("input", "t", (1, 2)).value == [1, 2]  # tuples become lists, so the round trip is exact
    assert g.add("input", "nan", float("nan")).value_is_repr
    assert Graph.from_json(g.to_json()) == g


def test_topological_order_when_edges_are_added_later():
    g = Graph()
    a = g.add("op", "a", 1)
    b = g.add("op", "b", 2)
    g.add_edge(a.id, Edge(b.id, "x"))  # a now depends on b, added after it
    assert [n.id for n in g.nodes] == [b.id, a.id]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"format": "opto-graph/2", "nodes": []}, "unsupported graph format"),
        ({"format": FORMAT, "nodes": [{"id": "a", "kind": "widget", "name": "a"}]}, "unknown kind 'widget'"),
        (
            {"format": FORMAT, "nodes": [{"id": "a", "kind": "op", "name": "a", "parents": [{"id": "ghost"}]}]},
            "parent 'ghost' does not exist",
        ),
        (
            {
                "format": FORMAT,
                "nodes": [
                    {"id": "a", "kind": "op", "name": "a", "parents": [{"id": "b"}]},
                    {"id": "b", "kind": "op", "name": "b", "parents": [{"id": "a"}]},
                ],
            },
            "cycle through node",
        ),
        ({"format": FORMAT, "nodes": [{"id": "a", "kind": "op"}, {"id": "a", "kind": "op"}]}, "duplicate node id"),
    ],
)
def test_invalid_graphs_are_rejected_naming_the_problem(data, message):
    with pytest.raises(GraphError, match=message):
        Graph.from_dict(data)


def test_building_errors():
    g = Graph()
    with pytest.raises(GraphError, match="parent 'nope' does not exist"):
        g.add("op", "x", 1, parents=["nope"])
    with pytest.raises(GraphError, match="unknown kind"):
        g.add("thing", "x", 1)
    with pytest.raises(GraphError, match="not JSON"):
        Graph.from_json("{not json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@st.composite
def random_dags(draw):
    n = draw(st.integers(min_value=1, max_value=25))
    g = Graph(meta=draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    ids = []
    for _ in range(n):
        kind = (
            draw(st.sampled_from(["parameter", "input", "op", "exception"]))
            if ids
            else draw(st.sampled_from(["parameter", "input"]))
        )
        parents = []
        if kind in ("op", "exception") and ids:
            picks = draw(st.lists(st.sampled_from(ids), max_size=3))
            parents = [
                Edge(p, draw(st.text(max_size=4)), draw(st.sampled_from(["data", "context", "call_tree"])))
                for p in picks
            ]
        node = g.add(
            kind,
            draw(st.text(min_size=1, max_size=6)),
            draw(json_values),
            parents=parents,
            param={"kind": "json", "trainable": draw(st.booleans())} if kind == "parameter" else None,
        )
        ids.append(node.id)
    if draw(st.booleans()):
        g.mark_output(ids[-1])
    return g


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_round_trip_property(g):
    again = Graph.from_json(g.to_json())
    assert again == g
    position = {n.id: i for i, n in enumerate(again.nodes)}
    for node in again.nodes:
        assert all(position[p] < position[node.id] for p in node.parents)
